package store

import (
	"errors"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestRoundTrip(t *testing.T) {
	ts := t0.Add(-time.Minute).UnixMilli()
	cases := []struct {
		name         string
		families     []*dto.MetricFamily
		wantSeries   int
		wantFamilies int
		wantDataTime time.Time
	}{
		{name: "T232", families: t232(t), wantSeries: 232, wantFamilies: 25, wantDataTime: time.UnixMilli(1564496667435)},
		{name: "every type", families: mixed(ts), wantSeries: 6, wantFamilies: 5, wantDataTime: time.UnixMilli(ts)},
		{name: "no families", families: nil, wantSeries: 0, wantFamilies: 0, wantDataTime: t0},
		{
			name: "no timestamps",
			families: []*dto.MetricFamily{{
				Name: proto.String("up"), Type: dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(1)}}},
			}},
			wantSeries: 1, wantFamilies: 1, wantDataTime: t0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openStore(t, t.TempDir(), Options{})
			m, err := s.Put("c1", t0, tc.families)
			require.NoError(t, err)
			require.Equal(t, "c1", m.ClusterID)
			require.Equal(t, tc.wantSeries, m.Series)
			require.Len(t, m.Families, tc.wantFamilies)
			require.True(t, tc.wantDataTime.Equal(m.DataTime), "data time %s", m.DataTime)
			require.True(t, t0.Equal(m.Received))

			got, gm, err := s.Families("c1")
			require.NoError(t, err)
			require.Equal(t, m, gm)
			requireFamiliesEqual(t, sorted(tc.families), got)

			info, err := os.Stat(s.pathsOf("c1").file)
			require.NoError(t, err)
			require.Equal(t, info.Size(), m.Bytes)

			for i, f := range m.Families {
				block, err := s.ReadFamilyBlock(m, i, nil)
				require.NoError(t, err)
				want, err := proto.Marshal(&dto.MetricFamily{Metric: sorted(tc.families)[i].Metric})
				require.NoError(t, err)
				require.Equal(t, want, block, "family %s", f.Name)
			}
		})
	}
}

func TestPutMergesAndDoesNotModifyInput(t *testing.T) {
	s, _ := openStore(t, t.TempDir(), Options{})
	a := &dto.MetricFamily{Name: proto.String("b_metric"), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(1)}}}}
	b := &dto.MetricFamily{Name: proto.String("b_metric"), Help: proto.String("second"), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(2)}}}}
	c := &dto.MetricFamily{Name: proto.String("a_metric"), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(3)}}}}
	empty := &dto.MetricFamily{Name: proto.String("c_empty"), Type: dto.MetricType_GAUGE.Enum()}
	in := []*dto.MetricFamily{a, b, c, empty}
	m, err := s.Put("c1", t0, in)
	require.NoError(t, err)
	require.Equal(t, []*dto.MetricFamily{a, b, c, empty}, in, "input order changed")
	require.Len(t, a.Metric, 1, "input family changed")
	require.Len(t, m.Families, 2)
	require.Equal(t, "a_metric", m.Families[0].Name)
	require.Equal(t, 2, m.Families[1].Series)
	require.Equal(t, "second", m.Families[1].Help)
}

func TestPutInvalid(t *testing.T) {
	gauge := func(name string) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String(name), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(1)}}}}
	}
	counter := gauge("x")
	counter.Type = dto.MetricType_COUNTER.Enum()
	unknown := gauge("y")
	unknown.Type = dto.MetricType(42).Enum()
	cases := []struct {
		name     string
		id       string
		families []*dto.MetricFamily
	}{
		{name: "empty cluster id", id: "", families: []*dto.MetricFamily{gauge("x")}},
		{name: "cluster id too long", id: strings.Repeat("a", 70000), families: []*dto.MetricFamily{gauge("x")}},
		{name: "types conflict", id: "c", families: []*dto.MetricFamily{gauge("x"), counter}},
		{name: "unknown type", id: "c", families: []*dto.MetricFamily{unknown}},
		{name: "nil series", id: "c", families: []*dto.MetricFamily{{Name: proto.String("z"), Metric: []*dto.Metric{nil}}}},
		{name: "empty name", id: "c", families: []*dto.MetricFamily{gauge("")}},
		{name: "timestamp beyond nanoseconds", id: "c", families: []*dto.MetricFamily{{Name: proto.String("t"),
			Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(1)}, TimestampMs: proto.Int64(1 << 62)}}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, reg := openStore(t, t.TempDir(), Options{})
			_, err := s.Put(tc.id, t0, tc.families)
			require.ErrorIs(t, err, upload.ErrInvalid)
			require.Equal(t, 0, s.Len())
			require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.writes.WithLabelValues(resultInvalid)))
			_ = reg
		})
	}
}

func TestStale(t *testing.T) {
	s, _ := openStore(t, t.TempDir(), Options{})
	newer := mixed(t0.UnixMilli())
	m, err := s.Put("c1", t0, newer)
	require.NoError(t, err)

	_, err = s.Put("c1", t0.Add(time.Minute), mixed(t0.Add(-time.Second).UnixMilli()))
	require.ErrorIs(t, err, ErrStale)
	require.ErrorIs(t, err, upload.ErrConflict)
	require.Equal(t, 409, upload.StatusCode(err))
	got, ok := s.Get("c1")
	require.True(t, ok)
	require.Equal(t, m, got)
	require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.writes.WithLabelValues(resultStale)))

	// The same data time is not stale: the last write wins.
	m2, err := s.Put("c1", t0.Add(time.Minute), mixed(t0.UnixMilli()))
	require.NoError(t, err)
	require.True(t, t0.Add(time.Minute).Equal(m2.Received))

	// PutRaw follows the same rule.
	other, _ := openStore(t, t.TempDir(), Options{})
	_, err = other.Put("c1", t0, mixed(t0.Add(-time.Hour).UnixMilli()))
	require.NoError(t, err)
	raw, _, err := other.ReadRaw("c1")
	require.NoError(t, err)
	_, err = s.PutRaw(raw)
	require.ErrorIs(t, err, ErrStale)
}

func TestReopenRecoversIdenticalIndex(t *testing.T) {
	dir := t.TempDir()
	s, _ := openStore(t, dir, Options{})
	want := map[string][]*dto.MetricFamily{}
	for i := range 8 {
		id := clusterName(i)
		fams := withID(t232(t), id)
		if i%2 == 1 {
			fams = append(fams, mixed(t0.UnixMilli())...)
		}
		_, err := s.Put(id, t0.Add(time.Duration(i)*time.Second), fams)
		require.NoError(t, err)
		want[id] = sorted(fams)
	}
	// Weird IDs are only ever hashed into paths.
	_, err := s.Put("../../etc/passwd\x00\n", t0, mixed(t0.UnixMilli()))
	require.NoError(t, err)
	want["../../etc/passwd\x00\n"] = sorted(mixed(t0.UnixMilli()))

	before := s.List()
	r, reg := openStore(t, dir, Options{})
	after := r.List()
	require.Equal(t, before, after)
	require.Equal(t, len(want), r.Len())
	for id, fams := range want {
		got, m, err := r.Families(id)
		require.NoError(t, err)
		requireFamiliesEqual(t, fams, got)
		orig, _ := s.Get(id)
		require.Equal(t, orig, m)
	}
	require.Equal(t, 9.0, testutil.ToFloat64(r.metrics.snapshots))
	require.Equal(t, float64(8*232+4*6+6), testutil.ToFloat64(r.metrics.series))
	require.Equal(t, 0.0, testutil.ToFloat64(r.metrics.quarantined))
	n, err := testutil.GatherAndCount(reg, "telemeter_server_store_snapshots", "telemeter_server_store_quarantined_total")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.NoFileExists(t, filepath.Join(dir, "passwd"))
}

func TestInterning(t *testing.T) {
	dir := t.TempDir()
	s, _ := openStore(t, dir, Options{})
	for i := range 3 {
		_, err := s.Put(clusterName(i), t0, t232(t))
		require.NoError(t, err)
	}
	check := func(s *Store) {
		list := s.List()
		for i := range list[0].Families {
			a, b := list[0].Families[i].Name, list[2].Families[i].Name
			require.Equal(t, a, b)
			require.Equal(t, unsafe.StringData(a), unsafe.StringData(b), "family name %s not shared", a)
		}
	}
	check(s)
	r, _ := openStore(t, dir, Options{})
	check(r)
}

func TestLeftoverTempFile(t *testing.T) {
	dir := t.TempDir()
	s, _ := openStore(t, dir, Options{})
	old := mixed(t0.UnixMilli())
	_, err := s.Put("c1", t0, old)
	require.NoError(t, err)

	// An interrupted write of c1 left half a file behind, and one of a
	// cluster that was never stored left a temp file in its own directory.
	p := s.pathsOf("c1")
	require.NoError(t, os.WriteFile(p.temp, []byte("TLMS\x01 half a file"), 0o640))
	q := s.pathsOf("never-stored")
	require.NoError(t, os.MkdirAll(q.dir, 0o750))
	require.NoError(t, os.WriteFile(q.temp, nil, 0o640))

	r, _ := openStore(t, dir, Options{})
	require.NoFileExists(t, p.temp)
	require.NoFileExists(t, q.temp)
	require.Equal(t, 1, r.Len())
	got, _, err := r.Families("c1")
	require.NoError(t, err)
	requireFamiliesEqual(t, sorted(old), got)
	require.Equal(t, 0.0, testutil.ToFloat64(r.metrics.quarantined))

	// The next write reuses the temp path; what it leaves there is empty.
	_, err = r.Put("c1", t0.Add(time.Minute), mixed(t0.Add(time.Minute).UnixMilli()))
	require.NoError(t, err)
	requireEmptyOrAbsent(t, p.temp)
}

// A write swaps the new file in and keeps the previous inode, emptied, as
// the next write's temp file (Linux); readers and restarts never see it,
// and Delete removes it with the snapshot.
func TestReplaceKeepsOnlyTheNewest(t *testing.T) {
	dir := t.TempDir()
	s, _ := openStore(t, dir, Options{})
	p := s.pathsOf("c1")
	var last []*dto.MetricFamily
	for i := range 4 {
		at := t0.Add(time.Duration(i) * time.Minute)
		last = mixed(at.UnixMilli())
		m, err := s.Put("c1", at, last)
		require.NoError(t, err)
		requireEmptyOrAbsent(t, p.temp)
		fi, err := os.Stat(p.file)
		require.NoError(t, err)
		require.Equal(t, m.Bytes, fi.Size())
		got, _, err := s.Families("c1")
		require.NoError(t, err)
		requireFamiliesEqual(t, sorted(last), got)
	}
	if runtime.GOOS == "linux" {
		require.FileExists(t, p.temp, "the exchange keeps the old inode for the next write")
	}

	r, _ := openStore(t, dir, Options{})
	require.NoFileExists(t, p.temp)
	got, _, err := r.Families("c1")
	require.NoError(t, err)
	requireFamiliesEqual(t, sorted(last), got)

	_, err = r.Put("c1", t0.Add(time.Hour), mixed(t0.Add(time.Hour).UnixMilli()))
	require.NoError(t, err)
	_, err = r.Put("c1", t0.Add(2*time.Hour), mixed(t0.Add(2*time.Hour).UnixMilli()))
	require.NoError(t, err)
	require.NoError(t, r.Delete("c1"))
	require.NoFileExists(t, p.file)
	require.NoFileExists(t, p.temp)
}

func requireEmptyOrAbsent(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	require.NoError(t, err)
	require.Zero(t, fi.Size(), "%s holds data", path)
}

func TestMisplacedFileIsQuarantined(t *testing.T) {
	dir := t.TempDir()
	s, _ := openStore(t, dir, Options{})
	_, err := s.Put("c1", t0, mixed(t0.UnixMilli()))
	require.NoError(t, err)
	// A valid file under another cluster's name must not be served as that cluster.
	src, dst := s.pathsOf("c1"), s.pathsOf("c2")
	require.NoError(t, os.MkdirAll(dst.dir, 0o750))
	require.NoError(t, os.Rename(src.file, dst.file))
	// Unknown files are left alone.
	stray := filepath.Join(dir, "README")
	require.NoError(t, os.WriteFile(stray, []byte("hello"), 0o640))

	r, _ := openStore(t, dir, Options{})
	require.Equal(t, 0, r.Len())
	require.Equal(t, 1.0, testutil.ToFloat64(r.metrics.quarantined))
	require.NoFileExists(t, dst.file)
	require.FileExists(t, stray)
	q, err := os.ReadDir(filepath.Join(dir, quarantineDir))
	require.NoError(t, err)
	require.Len(t, q, 1)
}

func TestGC(t *testing.T) {
	clock := &fixedClock{t: t0}
	s, _ := openStore(t, t.TempDir(), Options{TTL: 15 * time.Minute, Now: clock.now})
	_, err := s.Put("old", t0, mixed(t0.UnixMilli()))
	require.NoError(t, err)
	_, err = s.Put("new", t0.Add(10*time.Minute), mixed(t0.Add(10*time.Minute).UnixMilli()))
	require.NoError(t, err)

	clock.t = t0.Add(14 * time.Minute)
	require.Len(t, s.List(), 2)
	require.Equal(t, 0, s.GC())

	clock.t = t0.Add(20 * time.Minute)
	list := s.List()
	require.Len(t, list, 1, "expired snapshot still listed")
	require.Equal(t, "new", list[0].ClusterID)
	require.Equal(t, 2, s.Len())
	require.Equal(t, 1, s.GC())
	require.Equal(t, 1, s.Len())
	_, ok := s.Get("old")
	require.False(t, ok)
	require.NoFileExists(t, s.pathsOf("old").file)
	require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.gcRemoved))
	require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.snapshots))

	clock.t = t0.Add(time.Hour)
	require.Equal(t, 1, s.GC())
	require.Equal(t, 0, s.Len())
	require.Equal(t, 0.0, testutil.ToFloat64(s.metrics.series))
	require.Equal(t, 0.0, testutil.ToFloat64(s.metrics.bytes))

	noTTL, _ := openStore(t, t.TempDir(), Options{Now: clock.now})
	_, err = noTTL.Put("c", t0, nil)
	require.NoError(t, err)
	clock.t = t0.Add(1000 * time.Hour)
	require.Equal(t, 0, noTTL.GC())
	require.Len(t, noTTL.List(), 1)
}

func TestDelete(t *testing.T) {
	s, _ := openStore(t, t.TempDir(), Options{})
	m, err := s.Put("c1", t0, mixed(t0.UnixMilli()))
	require.NoError(t, err)
	require.NoError(t, s.Delete("c1"))
	require.NoError(t, s.Delete("c1"), "deleting twice")
	require.Equal(t, 0, s.Len())
	_, _, err = s.Families("c1")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = s.ReadFamilyBlock(m, 0, nil)
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, 0.0, testutil.ToFloat64(s.metrics.bytes))
}

func TestReadFamilyBlockAfterReplace(t *testing.T) {
	s, _ := openStore(t, t.TempDir(), Options{})
	first := mixed(t0.UnixMilli())
	old, err := s.Put("c1", t0, first)
	require.NoError(t, err)

	// The next snapshot drops build_info, retypes temperature and changes
	// the value of requests_total.
	second := mixed(t0.Add(time.Minute).UnixMilli())
	second[0].Metric[0].Counter.Value = proto.Float64(99)
	second[1].Type = dto.MetricType_UNTYPED.Enum()
	second[1].Metric[0].Gauge, second[1].Metric[0].Untyped = nil, &dto.Untyped{Value: proto.Float64(1)}
	second = second[:4]
	_, err = s.Put("c1", t0.Add(time.Minute), second)
	require.NoError(t, err)

	idx := map[string]int{}
	for i, f := range old.Families {
		idx[f.Name] = i
	}
	block, err := s.ReadFamilyBlock(old, idx["requests_total"], nil)
	require.NoError(t, err)
	mf := &dto.MetricFamily{}
	require.NoError(t, proto.Unmarshal(block, mf))
	require.Equal(t, 99.0, mf.Metric[0].GetCounter().GetValue(), "old meta must read the newest data")

	block, err = s.ReadFamilyBlock(old, idx["build_info"], []byte("reused"))
	require.NoError(t, err)
	require.Empty(t, block)

	_, err = s.ReadFamilyBlock(old, idx["temperature"], nil)
	require.ErrorIs(t, err, ErrChanged)

	_, err = s.ReadFamilyBlock(old, len(old.Families), nil)
	require.Error(t, err)
}

func TestReadFamilyBlockDetectsBitRot(t *testing.T) {
	s, _ := openStore(t, t.TempDir(), Options{})
	m, err := s.Put("c1", t0, t232(t))
	require.NoError(t, err)
	f, err := os.OpenFile(s.pathsOf("c1").file, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff}, m.Families[3].Offset+2)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = s.ReadFamilyBlock(m, 3, nil)
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = s.ReadFamilyBlock(m, 4, nil)
	require.NoError(t, err, "other families stay readable")
	_, _, err = s.ReadRaw("c1")
	require.ErrorIs(t, err, ErrCorrupt)
}

func TestPutRaw(t *testing.T) {
	src, _ := openStore(t, t.TempDir(), Options{})
	want := withID(t232(t), "c1")
	m, err := src.Put("c1", t0, append(want, mixed(t0.UnixMilli())...))
	require.NoError(t, err)
	raw, rm, err := src.ReadRaw("c1")
	require.NoError(t, err)
	require.Equal(t, m, rm)

	dst, _ := openStore(t, t.TempDir(), Options{})
	got, err := dst.PutRaw(raw)
	require.NoError(t, err)
	require.Equal(t, m.Series, got.Series)
	require.True(t, m.DataTime.Equal(got.DataTime))
	a, _, err := src.Families("c1")
	require.NoError(t, err)
	b, _, err := dst.Families("c1")
	require.NoError(t, err)
	requireFamiliesEqual(t, a, b)

	// A flipped bit anywhere is refused, as a 400.
	for _, off := range []int{0, 10, 40, len(raw) / 2, len(raw) - 1} {
		bad := append([]byte(nil), raw...)
		bad[off] ^= 0x10
		_, err := dst.PutRaw(bad)
		require.ErrorIs(t, err, ErrCorrupt, "offset %d", off)
		require.Equal(t, 400, upload.StatusCode(err))
	}
	// A file that is consistent with its checksum but lies about its
	// contents is refused too.
	lying := append([]byte(nil), raw...)
	lying[16]++ // data time
	_, err = dst.PutRaw(fixCRC(lying))
	require.ErrorIs(t, err, ErrCorrupt)
}

// fixCRC rewrites the trailer of a file so its checksum matches.
func fixCRC(b []byte) []byte {
	if len(b) < trailerSize {
		return b
	}
	body := b[:len(b)-trailerSize]
	c := crc32.Checksum(body, castagnoli)
	b[len(b)-4], b[len(b)-3], b[len(b)-2], b[len(b)-1] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	return b
}

func TestHugeClaimsAreRefusedBeforeAllocating(t *testing.T) {
	s, _ := openStore(t, t.TempDir(), Options{})
	m, err := s.Put("c1", t0, mixed(t0.UnixMilli()))
	require.NoError(t, err)
	raw, _, err := s.ReadRaw("c1")
	require.NoError(t, err)
	idEnd := headerSize + len(m.ClusterID)
	cases := []struct {
		name  string
		patch func(b []byte)
	}{
		{"family count", func(b []byte) { putU32(b[28:], 0xffffffff) }},
		{"cluster id length", func(b []byte) { b[6], b[7] = 0xff, 0xff }},
		{"help length", func(b []byte) { putU32(b[idEnd+4:], 0xfffffff0) }},
		{"block length", func(b []byte) { putU32(b[idEnd+20:], 0xfffffff0) }},
		{"decoded length", func(b []byte) { putU32(b[idEnd+24:], 0xfffffff0) }},
		{"series", func(b []byte) { putU32(b[24:], 0xffffffff) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := append([]byte(nil), raw...)
			tc.patch(bad)
			fixCRC(bad)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := verifySnapshot(bad, nil, "")
			runtime.ReadMemStats(&after)
			require.ErrorIs(t, err, ErrCorrupt)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<10))
		})
	}
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func TestMetrics(t *testing.T) {
	s, reg := openStore(t, t.TempDir(), Options{})
	m1, err := s.Put("a", t0, t232(t))
	require.NoError(t, err)
	m2, err := s.Put("b", t0, t232(t))
	require.NoError(t, err)
	m3, err := s.Put("b", t0, mixed(t0.UnixMilli()))
	require.NoError(t, err)
	require.Equal(t, 2.0, testutil.ToFloat64(s.metrics.snapshots))
	require.Equal(t, float64(232+6), testutil.ToFloat64(s.metrics.series))
	require.Equal(t, float64(m1.Bytes+m3.Bytes), testutil.ToFloat64(s.metrics.bytes))
	require.Equal(t, 3.0, testutil.ToFloat64(s.metrics.writes.WithLabelValues(resultOK)))
	require.NotEqual(t, m2.Bytes, m3.Bytes)
	n, err := testutil.GatherAndCount(reg, "telemeter_server_store_write_duration_seconds")
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// Opening a second store against the same registry must not panic.
	_, err = Open(t.TempDir(), Options{NoSync: true}, nil, reg)
	require.NoError(t, err)
}

func TestConcurrentUse(t *testing.T) {
	s, _ := openStore(t, t.TempDir(), Options{NoSync: true})
	base := mixed(t0.UnixMilli())
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				id := clusterName(i % 5)
				if _, err := s.Put(id, t0.Add(time.Duration(w*100+i)*time.Millisecond), base); err != nil && !errors.Is(err, ErrStale) {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() {
			for range 50 {
				for _, m := range s.List() {
					for i := range m.Families {
						if _, err := s.ReadFamilyBlock(m, i, nil); err != nil {
							errs <- err
							return
						}
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 5, s.Len())
}

// With IdentityLabel, a peer's snapshot of cluster c1 is taken only if every
// one of its series says _id="c1": never one holding another cluster's, or
// unlabelled, series.
func TestPutRawChecksIdentity(t *testing.T) {
	dst, _ := openStore(t, t.TempDir(), Options{IdentityLabel: "_id"})
	for _, tc := range []struct {
		name     string
		families []*dto.MetricFamily
		ok       bool
	}{
		{"every series carries its cluster", withID(t232(t), "c1"), true},
		{"one series of another cluster", append(withID(t232(t), "c1"), withID(mixed(t0.UnixMilli()), "c2")[0]), false},
		{"one series without the label", append(withID(t232(t), "c1"), mixed(t0.UnixMilli())[1]), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, _ := openStore(t, t.TempDir(), Options{})
			_, err := src.Put("c1", t0, tc.families)
			require.NoError(t, err)
			raw, _, err := src.ReadRaw("c1")
			require.NoError(t, err)
			require.NoError(t, dst.Delete("c1"))
			_, err = dst.PutRaw(raw)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrCorrupt)
			require.Equal(t, 400, upload.StatusCode(err))
			_, found := dst.Get("c1")
			require.False(t, found)
		})
	}
}
