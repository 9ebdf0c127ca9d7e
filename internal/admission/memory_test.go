package admission

import (
	"context"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// writeTree lays out files (path relative to root → content) under a
// temporary root.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(content), 0o644))
	}
	return root
}

func TestMemoryLimit(t *testing.T) {
	const gib = 1 << 30
	const unset = math.MaxInt64
	for _, tc := range []struct {
		name       string
		files      map[string]string
		goLimit    int64
		wantLimit  int64
		wantSource string
	}{
		{
			name:    "nothing set",
			files:   map[string]string{"proc/self/cgroup": "0::/\n"},
			goLimit: unset,
		},
		{
			name:       "GOMEMLIMIT only",
			files:      map[string]string{},
			goLimit:    2 * gib,
			wantLimit:  2 * gib,
			wantSource: SourceGoMemLimit,
		},
		{
			name: "cgroup v2 in its own namespace",
			files: map[string]string{
				"proc/self/cgroup":          "0::/\n",
				"sys/fs/cgroup/memory.max":  "1073741824\n",
				"sys/fs/cgroup/memory.high": "max\n",
			},
			goLimit:    unset,
			wantLimit:  gib,
			wantSource: SourceCgroupV2,
		},
		{
			name: "cgroup v2 max is no limit",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "max\n",
			},
			goLimit: unset,
		},
		{
			name: "cgroup v2 nested: the tighter ancestor wins",
			files: map[string]string{
				"proc/self/cgroup":                               "0::/kubepods/pod1/ctr\n",
				"sys/fs/cgroup/kubepods/pod1/ctr/memory.max":     "4294967296\n",
				"sys/fs/cgroup/kubepods/pod1/memory.max":         "2147483648\n",
				"sys/fs/cgroup/kubepods/memory.max":              "max\n",
				"sys/fs/cgroup/kubepods/pod1/ctr/memory.current": "12345\n",
			},
			goLimit:    unset,
			wantLimit:  2 * gib,
			wantSource: SourceCgroupV2,
		},
		{
			name: "cgroup v2 host path not visible in the container",
			files: map[string]string{
				"proc/self/cgroup":         "0::/system.slice/docker-abc.scope\n",
				"sys/fs/cgroup/memory.max": "536870912\n",
			},
			goLimit:    unset,
			wantLimit:  gib / 2,
			wantSource: SourceCgroupV2,
		},
		{
			name: "GOMEMLIMIT below the cgroup limit",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "4294967296\n",
			},
			goLimit:    gib,
			wantLimit:  gib,
			wantSource: SourceGoMemLimit,
		},
		{
			name: "cgroup limit below GOMEMLIMIT",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "1073741824\n",
			},
			goLimit:    8 * gib,
			wantLimit:  gib,
			wantSource: SourceCgroupV2,
		},
		{
			name: "cgroup v1 memory controller",
			files: map[string]string{
				"proc/self/cgroup": "12:pids:/docker/abc\n11:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n0::/\n",
				"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "3221225472\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":            "9223372036854771712\n",
			},
			goLimit:    unset,
			wantLimit:  3 * gib,
			wantSource: SourceCgroupV1,
		},
		{
			name: "cgroup v1 unlimited",
			files: map[string]string{
				"proc/self/cgroup":                           "4:memory:/\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
			},
			goLimit: unset,
		},
		{
			name: "cgroup v1 controller listed with others",
			files: map[string]string{
				"proc/self/cgroup": "4:blkio,memory:/a\n",
				"sys/fs/cgroup/memory/a/memory.limit_in_bytes": "1073741824",
			},
			goLimit:    unset,
			wantLimit:  gib,
			wantSource: SourceCgroupV1,
		},
		{
			name: "garbage files are no limit",
			files: map[string]string{
				"proc/self/cgroup":         "not a cgroup file\n::\n",
				"sys/fs/cgroup/memory.max": "lots\n",
			},
			goLimit: unset,
		},
		{
			name:       "no /proc: the mount root is read",
			files:      map[string]string{"sys/fs/cgroup/memory.max": "1073741824\n"},
			goLimit:    unset,
			wantLimit:  gib,
			wantSource: SourceCgroupV2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := writeTree(t, tc.files)
			limit, source := memoryLimit(root, tc.goLimit)
			require.Equal(t, tc.wantLimit, limit)
			require.Equal(t, tc.wantSource, source)
		})
	}
}

func TestMemoryLimitOfThisProcess(t *testing.T) {
	limit, source := MemoryLimit()
	require.GreaterOrEqual(t, limit, int64(0))
	if limit == 0 {
		require.Empty(t, source)
	} else {
		require.Contains(t, []string{SourceGoMemLimit, SourceCgroupV2, SourceCgroupV1}, source)
	}
}

func TestApplyGoMemLimit(t *testing.T) {
	const unset = math.MaxInt64
	for _, tc := range []struct {
		name     string
		env      string
		current  int64
		limit    int64
		fraction float64
		want     int64
	}{
		{name: "sets a fraction of the limit", current: unset, limit: 1000, fraction: 0.9, want: 900},
		{name: "GOMEMLIMIT in the environment wins", env: "500MiB", current: 500, limit: 1000, fraction: 0.9},
		{name: "GOMEMLIMIT=off is respected", env: "off", current: unset, limit: 1000, fraction: 0.9},
		{name: "limit set by the program already", current: 700, limit: 1000, fraction: 0.9},
		{name: "no limit", current: unset, limit: 0, fraction: 0.9},
		{name: "nonsense fraction", current: unset, limit: 1000, fraction: 1.5},
		{name: "zero fraction", current: unset, limit: 1000, fraction: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			current := tc.current
			set := func(v int64) int64 {
				old := current
				if v >= 0 {
					current = v
				}
				return old
			}
			getenv := func(k string) string {
				require.Equal(t, "GOMEMLIMIT", k)
				return tc.env
			}
			got := applyGoMemLimit(tc.limit, tc.fraction, getenv, set)
			require.Equal(t, tc.want, got)
			if tc.want > 0 {
				require.Equal(t, tc.want, current)
			} else {
				require.Equal(t, tc.current, current, "limit changed")
			}
		})
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeMemory is an injected memory reading that counts how often it is read.
type fakeMemory struct {
	usage atomic.Uint64
	reads atomic.Int64
}

func (m *fakeMemory) read() uint64 {
	m.reads.Add(1)
	return m.usage.Load()
}

func newTestPressure(limit int64, mem *fakeMemory, c *fakeClock, reg prometheus.Registerer) *Pressure {
	p := NewPressure(limit, 0.8, mem.read, reg)
	p.now = c.now
	p.epoch = c.now()
	return p
}

func TestPressureSheds(t *testing.T) {
	c := newFakeClock()
	mem := &fakeMemory{}
	reg := prometheus.NewRegistry()
	p := newTestPressure(1000, mem, c, reg)

	mem.usage.Store(800) // at the mark is not over it
	require.NoError(t, p.Check())

	mem.usage.Store(801)
	require.NoError(t, p.Check(), "reading refreshed before 100ms passed")
	c.advance(pressureSampleEvery)
	err := p.Check()
	require.ErrorIs(t, err, upload.ErrUnavailable)
	require.Equal(t, http.StatusServiceUnavailable, upload.StatusCode(err))
	require.Equal(t, pressureRetryAfter, upload.RetryAfter(err))
	require.Error(t, p.Check())
	require.Equal(t, 2.0, testutil.ToFloat64(p.shed))

	mem.usage.Store(100)
	c.advance(pressureSampleEvery)
	require.NoError(t, p.Check())

	require.Equal(t, 1000.0, gaugeValue(t, reg, "telemeter_server_admission_memory_limit_bytes"))
	require.Equal(t, 800.0, gaugeValue(t, reg, "telemeter_server_admission_memory_high_water_bytes"))
	require.Equal(t, 100.0, gaugeValue(t, reg, "telemeter_server_admission_memory_usage_bytes"))
}

func TestPressureSamplesAtMostEvery100ms(t *testing.T) {
	c := newFakeClock()
	mem := &fakeMemory{}
	p := newTestPressure(1000, mem, c, nil)
	for range 50 {
		require.NoError(t, p.Check())
		c.advance(10 * time.Millisecond) // 500ms in all
	}
	require.Equal(t, int64(5), mem.reads.Load())
}

func TestPressureWithoutLimitNeverSheds(t *testing.T) {
	c := newFakeClock()
	mem := &fakeMemory{}
	mem.usage.Store(math.MaxUint64)
	p := newTestPressure(0, mem, c, nil)
	for range 3 {
		require.NoError(t, p.Check())
		c.advance(time.Second)
	}
	require.Zero(t, mem.reads.Load(), "no limit: memory need not be read")
}

func TestPressureConcurrent(t *testing.T) {
	mem := &fakeMemory{}
	p := NewPressure(1000, 0.5, mem.read, nil) // real clock
	var wg sync.WaitGroup
	var shed atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				if g == 0 && i%100 == 0 {
					mem.usage.Store(uint64(i % 1000))
				}
				if p.Check() != nil {
					shed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// 8×2000 checks over well under a second of real time: a handful of reads.
	require.Less(t, mem.reads.Load(), int64(1000))
}

func TestPressureRun(t *testing.T) {
	mem := &fakeMemory{}
	p := NewPressure(1000, 0.8, mem.read, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	require.Eventually(t, func() bool { return mem.reads.Load() >= 2 }, 5*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestPressureCheckDoesNotAllocate(t *testing.T) {
	c := newFakeClock()
	mem := &fakeMemory{}
	mem.usage.Store(900)
	p := newTestPressure(1000, mem, c, nil)
	allocs := testing.AllocsPerRun(100, func() {
		c.advance(50 * time.Millisecond) // a fresh reading every other call
		if p.Check() == nil {
			t.Fatal("not shed above the mark")
		}
	})
	require.Zero(t, allocs)
}

var keep []byte

func TestRuntimeMemorySeesTheHeap(t *testing.T) {
	read := RuntimeMemory()
	require.Positive(t, read())
	keep = make([]byte, 32<<20)
	after := read()
	runtime.KeepAlive(keep)
	keep = nil
	require.GreaterOrEqual(t, after, uint64(32<<20), "a 32 MiB live slice is mapped memory")
}

// An idle server over the mark (garbage not yet collected) reclaims and
// admits again without waiting for a natural collection.
func TestRunReclaimsUnderPressure(t *testing.T) {
	var use atomic.Uint64
	use.Store(900)
	p := NewPressure(1000, 0.8, use.Load, prometheus.NewRegistry())
	reclaimed := make(chan struct{}, 10)
	p.reclaim = func() {
		use.Store(100) // the collection frees the garbage
		reclaimed <- struct{}{}
	}
	require.Error(t, p.Check())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		_ = p.Run(ctx)
		close(done)
	}()
	select {
	case <-reclaimed:
	case <-time.After(5 * time.Second):
		t.Fatal("no reclaim while over the high-water mark")
	}
	require.Eventually(t, func() bool { return p.Check() == nil }, 2*time.Second, 10*time.Millisecond)
	cancel()
	<-done
	require.Len(t, reclaimed, 0, "one reclaim is enough once usage fell")
}
