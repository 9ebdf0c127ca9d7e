package admission

import (
	"bufio"
	"bytes"
	"context"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/upload"
)

// Sources MemoryLimit reports.
const (
	SourceGoMemLimit = "GOMEMLIMIT"
	SourceCgroupV2   = "cgroup v2"
	SourceCgroupV1   = "cgroup v1"
)

// MemoryLimit returns the memory the process may use and where that figure
// comes from: the smaller of the Go runtime's memory limit (GOMEMLIMIT or
// debug.SetMemoryLimit) and the memory cgroup's limit (v2 memory.max, or v1
// memory.limit_in_bytes, of the process's cgroup and its ancestors). It
// returns 0 and "" when neither is set.
func MemoryLimit() (limit int64, source string) {
	return memoryLimit("/", debug.SetMemoryLimit(-1))
}

// memoryLimit is MemoryLimit over a file system rooted at root, so tests can
// lay out fake /proc and /sys/fs/cgroup trees. goLimit is the runtime's
// limit, math.MaxInt64 when unset.
func memoryLimit(root string, goLimit int64) (int64, string) {
	var limit int64
	var source string
	if goLimit > 0 && goLimit < math.MaxInt64 {
		limit, source = goLimit, SourceGoMemLimit
	}
	if cg, src := cgroupLimit(root); cg > 0 && (limit == 0 || cg < limit) {
		limit, source = cg, src
	}
	return limit, source
}

// cgroupV1Unlimited: cgroup v1 reports "no limit" as a page-aligned number
// near MaxInt64; anything this large is no limit.
const cgroupV1Unlimited = 1 << 62

// cgroupLimit returns the tightest memory limit on the path from the
// process's cgroup to the root of the mounted hierarchy, v2 first, then v1.
func cgroupLimit(root string) (int64, string) {
	v2Path, v1Path := selfCgroups(filepath.Join(root, "proc/self/cgroup"))
	if l, ok := hierarchyLimit(filepath.Join(root, "sys/fs/cgroup"), v2Path, "memory.max"); ok {
		return l, SourceCgroupV2
	}
	if l, ok := hierarchyLimit(filepath.Join(root, "sys/fs/cgroup/memory"), v1Path, "memory.limit_in_bytes"); ok {
		return l, SourceCgroupV1
	}
	return 0, ""
}

// selfCgroups reads /proc/self/cgroup: the v2 path ("0::/path") and the v1
// memory controller's path ("N:...memory...:/path"); "/" when absent.
func selfCgroups(file string) (v2, v1 string) {
	v2, v1 = "/", "/"
	data, err := os.ReadFile(file)
	if err != nil {
		return v2, v1
	}
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		id, rest, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		controllers, p, ok := strings.Cut(rest, ":")
		if !ok || !strings.HasPrefix(p, "/") {
			continue
		}
		if id == "0" && controllers == "" {
			v2 = p
			continue
		}
		for c := range strings.SplitSeq(controllers, ",") {
			if c == "memory" {
				v1 = p
			}
		}
	}
	return v2, v1
}

// hierarchyLimit reads name in dir/cg and in each ancestor up to dir, and
// returns the smallest limit found. ok is false when no file in the chain
// could be read, i.e. that hierarchy is not mounted there. A process in a
// container with its own cgroup namespace sees its cgroup as "/" and the
// mount as its own; without one, /proc/self/cgroup names a host path that
// does not exist in the container, and the walk ends at the mount's root.
func hierarchyLimit(dir, cg, name string) (limit int64, ok bool) {
	cg = path.Clean("/" + cg)
	for {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(cg), name))
		if err == nil {
			ok = true
			if l, set := parseCgroupLimit(string(data)); set && (limit == 0 || l < limit) {
				limit = l
			}
		}
		if cg == "/" {
			return limit, ok
		}
		cg = path.Dir(cg)
	}
}

// parseCgroupLimit reads a memory.max or memory.limit_in_bytes value.
func parseCgroupLimit(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if s == "" || s == "max" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || v >= cgroupV1Unlimited {
		return 0, false
	}
	return v, true
}

// ApplyGoMemLimit sets the Go runtime's memory limit to fraction × limit
// when the operator has not set GOMEMLIMIT, so that the garbage collector
// works harder before the cgroup's OOM killer acts. Call it once at start,
// with the limit from MemoryLimit and a fraction such as 0.9. It returns the
// limit it set, or 0 when it changed nothing.
func ApplyGoMemLimit(limit int64, fraction float64) int64 {
	return applyGoMemLimit(limit, fraction, os.Getenv, debug.SetMemoryLimit)
}

func applyGoMemLimit(limit int64, fraction float64, getenv func(string) string, set func(int64) int64) int64 {
	if limit <= 0 || fraction <= 0 || fraction > 1 || getenv("GOMEMLIMIT") != "" {
		return 0
	}
	if cur := set(-1); cur > 0 && cur < math.MaxInt64 {
		return 0 // set by the program already
	}
	v := int64(float64(limit) * fraction)
	if v <= 0 {
		return 0
	}
	set(v)
	return v
}

const (
	// pressureSampleEvery bounds how often Check reads memory use.
	pressureSampleEvery = 100 * time.Millisecond
	// pressureRetryAfter gives the garbage collector time to catch up.
	pressureRetryAfter = 5 * time.Second
)

// Pressure sheds requests while memory use is above a high-water mark. It
// is safe for concurrent use.
type Pressure struct {
	limit     int64
	highWater uint64 // bytes; 0: never shed
	read      func() uint64

	now     func() time.Time
	epoch   time.Time
	sampled atomic.Int64  // nanoseconds since epoch of the last reading, -1 before the first
	usage   atomic.Uint64 // the last reading
	reading sync.Mutex    // one reader at a time

	errShed error
	shed    prometheus.Counter

	// reclaim collects garbage and returns freed memory to the OS; Run
	// calls it at most every reclaimEvery while over the mark, so an idle
	// server does not keep refusing on garbage it has not collected.
	reclaim     func()
	lastReclaim time.Time
	reclaims    prometheus.Counter
}

// NewPressure sheds when memory use exceeds highWater × limit (say 0.8 of
// the limit from MemoryLimit). limit <= 0 or highWater <= 0 never sheds;
// highWater above 1 counts as 1. read returns the memory in use; nil uses
// RuntimeMemory. reg may be nil.
func NewPressure(limit int64, highWater float64, read func() uint64, reg prometheus.Registerer) *Pressure {
	if read == nil {
		read = RuntimeMemory()
	}
	p := &Pressure{
		limit:   limit,
		read:    read,
		now:     time.Now,
		errShed: upload.WithRetryAfter(upload.ErrUnavailable, pressureRetryAfter, "memory pressure"),
		reclaim: debug.FreeOSMemory,
	}
	if limit > 0 && highWater > 0 {
		p.highWater = uint64(float64(limit) * min(highWater, 1))
	}
	p.epoch = p.now()
	p.sampled.Store(-1)
	f := promauto.With(reg)
	p.shed = f.NewCounter(prometheus.CounterOpts{
		Name: "telemeter_server_admission_memory_shed_total",
		Help: "Requests refused because memory use was above the high-water mark.",
	})
	p.reclaims = f.NewCounter(prometheus.CounterOpts{
		Name: "telemeter_server_admission_memory_reclaims_total",
		Help: "Forced garbage collections because memory use stayed above the high-water mark.",
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_admission_memory_limit_bytes",
		Help: "Memory limit admission works against (GOMEMLIMIT or cgroup); 0 when none.",
	}, func() float64 { return float64(max(p.limit, 0)) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_admission_memory_high_water_bytes",
		Help: "Memory use above which requests are shed; 0 when shedding is off.",
	}, func() float64 { return float64(p.highWater) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemeter_server_admission_memory_usage_bytes",
		Help: "Memory use as last sampled by admission control.",
	}, func() float64 { return float64(p.Usage()) })
	return p
}

// Check returns an error wrapping upload.ErrUnavailable with a Retry-After
// while memory use is above the high-water mark, nil otherwise. It reads
// memory use at most every 100ms and is otherwise a clock read and two
// atomic loads.
func (p *Pressure) Check() error {
	if p.highWater == 0 {
		return nil
	}
	if p.Usage() > p.highWater {
		p.shed.Inc()
		return p.errShed
	}
	return nil
}

// Usage returns memory use, refreshed when the last reading is older than
// 100ms.
func (p *Pressure) Usage() uint64 {
	last := p.sampled.Load()
	now := p.now().Sub(p.epoch).Nanoseconds()
	if last >= 0 && now-last < int64(pressureSampleEvery) {
		return p.usage.Load()
	}
	p.sample(now, last >= 0)
	return p.usage.Load()
}

// sample takes a reading. With a reading to fall back on, a caller that
// finds another one sampling does not wait for it.
func (p *Pressure) sample(now int64, haveOld bool) {
	if haveOld {
		if !p.reading.TryLock() {
			return
		}
	} else {
		p.reading.Lock()
	}
	defer p.reading.Unlock()
	if last := p.sampled.Load(); last >= 0 && now-last < int64(pressureSampleEvery) {
		return // another caller sampled while this one waited
	}
	p.usage.Store(p.read())
	p.sampled.Store(now)
}

// reclaimEvery bounds how often Run forces a collection under pressure.
const reclaimEvery = time.Second

// Run samples memory use every 100ms until ctx is done, so that Check never
// reads it on a request's path. While use is above the mark it forces a
// collection at most once a second: the reading counts garbage not yet
// collected, and a server that sheds its load allocates too little to
// trigger a collection by itself. It returns nil.
func (p *Pressure) Run(ctx context.Context) error {
	t := time.NewTicker(pressureSampleEvery)
	defer t.Stop()
	for {
		if p.highWater > 0 && p.Usage() > p.highWater {
			if now := p.now(); now.Sub(p.lastReclaim) >= reclaimEvery {
				p.lastReclaim = now
				p.reclaim()
				p.reclaims.Inc()
				p.forceSample()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// forceSample takes a reading now, whatever the age of the last one.
func (p *Pressure) forceSample() {
	p.reading.Lock()
	defer p.reading.Unlock()
	p.usage.Store(p.read())
	p.sampled.Store(p.now().Sub(p.epoch).Nanoseconds())
}

// RuntimeMemory returns a reader of the memory the Go runtime has mapped
// and not returned to the operating system: runtime/metrics
// "/memory/classes/total:bytes" minus "/memory/classes/heap/released:bytes".
//
// This is the quantity GOMEMLIMIT bounds, and, for a program without cgo,
// nearly all of what the cgroup charges to the process apart from page
// cache. It includes garbage not yet collected, so it reads high between
// collections: admission sheds a little early rather than late, which is
// the safe side of an OOM kill. The live heap alone would shed later but
// can lag a burst of new allocations by a whole GC cycle.
func RuntimeMemory() func() uint64 {
	var mu sync.Mutex
	samples := []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	return func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		metrics.Read(samples)
		total, released := sampleUint(samples[0]), sampleUint(samples[1])
		if released > total {
			return 0
		}
		return total - released
	}
}

func sampleUint(s metrics.Sample) uint64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}
