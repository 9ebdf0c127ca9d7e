package federate

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	runtimemetrics "runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/store"
)

// fleet stores n clusters with overlapping families: all carry T232 and the
// rich payload, every third one a family of its own. It returns what each
// cluster stored.
func fleet(tb testing.TB, s *store.Store, n int) map[string][]*dto.MetricFamily {
	tb.Helper()
	base := t232(tb)
	stored := map[string][]*dto.MetricFamily{}
	for i := range n {
		id := fmt.Sprintf("cluster-%03d", i)
		fams := append(withID(base, id), withID(rich(i, t0.UnixMilli()), id)...)
		if i%3 == 0 {
			fams = append(fams, withID([]*dto.MetricFamily{{
				Name: proto.String(fmt.Sprintf("only_in_cluster_%d", i)), Type: dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(float64(i))}}},
			}}, id)...)
		}
		_, err := s.Put(id, t0, fams)
		require.NoError(tb, err)
		stored[id] = fams
	}
	return stored
}

func TestFederate(t *testing.T) {
	s := openStore(t)
	stored := fleet(t, s, 6)
	var want []*dto.MetricFamily
	for _, fams := range stored {
		want = append(want, fams...)
	}
	wantLines := map[bool][]string{false: seriesLines(t, want, false), true: seriesLines(t, want, true)}
	cases := []struct {
		name   string
		accept string
		ct     expfmt.Format
		keepTS bool
	}{
		{name: "text", accept: acceptText, ct: expfmt.FmtText},
		{name: "no Accept header", accept: "", ct: expfmt.FmtText},
		{name: "Accept from Prometheus", accept: acceptPrometheus, ct: expfmt.FmtText},
		{name: "anything", accept: "*/*", ct: expfmt.FmtText},
		{name: "protobuf", accept: acceptProto, ct: expfmt.FmtProtoDelim},
		{name: "text with timestamps", accept: acceptText, ct: expfmt.FmtText, keepTS: true},
		{name: "protobuf with timestamps", accept: acceptProto, ct: expfmt.FmtProtoDelim, keepTS: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newHandler(s, Options{KeepTimestamps: tc.keepTS})
			rec := scrape(t, h, tc.accept)
			require.Equal(t, string(tc.ct), rec.Header().Get("Content-Type"))
			got := decode(t, rec)
			require.Equal(t, wantLines[tc.keepTS], seriesLines(t, got, tc.keepTS))

			names := map[string]dto.MetricType{}
			for _, mf := range want {
				names[mf.GetName()] = mf.GetType()
			}
			require.Len(t, got, len(names), "one family per name")
			for _, mf := range got {
				require.Equal(t, names[mf.GetName()], mf.GetType(), mf.GetName())
				for _, m := range mf.Metric {
					if tc.keepTS {
						continue
					}
					require.Nil(t, m.TimestampMs, "timestamp of %s not stripped", mf.GetName())
				}
			}
			if tc.keepTS {
				stamped := 0
				for _, mf := range got {
					for _, m := range mf.Metric {
						if m.TimestampMs != nil {
							stamped++
						}
					}
				}
				require.Positive(t, stamped)
			}
		})
	}
}

func TestHelpOncePerFamily(t *testing.T) {
	s := openStore(t)
	fleet(t, s, 3)
	h, _ := newHandler(s, Options{})
	body := scrape(t, h, acceptText).Body
	require.Equal(t, 1, strings.Count(body.String(), "# HELP http_requests_total Requests by code.\\nSecond line with \\\\ backslash.\n"))
	require.Equal(t, 1, strings.Count(body.String(), "# TYPE request_duration_seconds histogram\n"))
	require.NotContains(t, body.String(), "# HELP build_info", "an empty HELP is not written")
}

func TestOwnsFilter(t *testing.T) {
	s := openStore(t)
	stored := fleet(t, s, 9)
	owned := map[string]bool{"cluster-001": true, "cluster-004": true, "cluster-006": true}
	var want []*dto.MetricFamily
	for id, fams := range stored {
		if owned[id] {
			want = append(want, fams...)
		}
	}
	for _, accept := range []string{acceptText, acceptProto} {
		h, _ := newHandler(s, Options{Owns: func(id string) bool { return owned[id] }})
		got := decode(t, scrape(t, h, accept))
		require.Equal(t, seriesLines(t, want, false), seriesLines(t, got, false), accept)
	}
	h, _ := newHandler(s, Options{Owns: func(string) bool { return false }})
	require.Empty(t, decode(t, scrape(t, h, acceptText)))
}

func TestTypeConflict(t *testing.T) {
	s := openStore(t)
	// The cluster whose ID sorts first pushes the family under another
	// type: it must not hide the others' series.
	counter := []*dto.MetricFamily{{Name: proto.String("x"), Type: dto.MetricType_COUNTER.Enum(),
		Metric: []*dto.Metric{{Label: lp("_id", "a"), Counter: &dto.Counter{Value: proto.Float64(2)}}}}}
	gauge := []*dto.MetricFamily{{Name: proto.String("x"), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{Label: lp("_id", "b"), Gauge: &dto.Gauge{Value: proto.Float64(1)}}}}}
	gauge2 := []*dto.MetricFamily{{Name: proto.String("x"), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{Label: lp("_id", "c"), Gauge: &dto.Gauge{Value: proto.Float64(3)}}}}}
	for id, f := range map[string][]*dto.MetricFamily{"a": counter, "b": gauge, "c": gauge2} {
		_, err := s.Put(id, t0, f)
		require.NoError(t, err)
	}
	for _, accept := range []string{acceptText, acceptProto} {
		h, _ := newHandler(s, Options{})
		got := decode(t, scrape(t, h, accept))
		require.Len(t, got, 1)
		require.Equal(t, dto.MetricType_GAUGE, got[0].GetType(), "the type most clusters use wins")
		require.Equal(t, seriesLines(t, append(gauge, gauge2...), false), seriesLines(t, got, false))
		require.Equal(t, 1.0, testutil.ToFloat64(h.metrics.skipped.WithLabelValues(reasonTypeConflict)))
	}
}

func TestInvalidSeriesAreLeftOut(t *testing.T) {
	s := openStore(t)
	good := &dto.Metric{Label: lp("ok", "yes"), Gauge: &dto.Gauge{Value: proto.Float64(1)}}
	fams := []*dto.MetricFamily{
		{Name: proto.String("bad-name"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{good}},
		{Name: proto.String("g"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{
			good,
			{Label: lp("__reserved", "x"), Gauge: &dto.Gauge{Value: proto.Float64(2)}},
			{Label: lp("bad-label", "x"), Gauge: &dto.Gauge{Value: proto.Float64(3)}},
			{Label: lp("v", "\xff\xfe"), Gauge: &dto.Gauge{Value: proto.Float64(4)}},
			{Label: lp("a", "1", "a", "2"), Gauge: &dto.Gauge{Value: proto.Float64(5)}},
			{Label: lp("c", "1"), Counter: &dto.Counter{Value: proto.Float64(6)}}, // value of another type
		}},
		{Name: proto.String("h"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{
			{Label: lp("le", "1"), Histogram: &dto.Histogram{SampleCount: proto.Uint64(1)}},
		}},
	}
	_, err := s.Put("c1", t0, fams)
	require.NoError(t, err)
	for _, accept := range []string{acceptText} {
		h, _ := newHandler(s, Options{})
		got := decode(t, scrape(t, h, accept))
		require.Len(t, got, 1)
		require.Equal(t, "g", got[0].GetName())
		require.Len(t, got[0].Metric, 1)
		require.Equal(t, 7.0, testutil.ToFloat64(h.metrics.skipped.WithLabelValues(reasonInvalid)))
	}
}

func TestMethodsAndMetrics(t *testing.T) {
	s := openStore(t)
	fleet(t, s, 2)
	h, reg := newHandler(s, Options{})

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/federate", nil))
	require.Equal(t, http.StatusMethodNotAllowed, rec.Code)

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/federate", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, string(expfmt.FmtText), rec.Header().Get("Content-Type"))
	require.Zero(t, rec.Body.Len())

	got := decode(t, scrape(t, h, acceptProto))
	series := 0
	for _, mf := range got {
		series += len(mf.Metric)
	}
	require.Equal(t, float64(series), testutil.ToFloat64(h.metrics.series))
	require.Equal(t, 1.0, testutil.ToFloat64(h.metrics.requests.WithLabelValues(formatProto)))
	require.Equal(t, 1.0, testutil.ToFloat64(h.metrics.requests.WithLabelValues(formatText)), "HEAD counts, POST does not")
	n, err := testutil.GatherAndCount(reg, "telemeter_server_federate_duration_seconds")
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

// TestTextMatchesExpfmt compares the hand-written renderer with expfmt's on
// every family: the same bytes, timestamps kept.
func TestTextMatchesExpfmt(t *testing.T) {
	s := openStore(t)
	fams := append(t232(t), rich(3, t0.UnixMilli())...)
	fams = append(fams, &dto.MetricFamily{
		Name: proto.String("gauge_histogram"), Type: dto.MetricType_GAUGE_HISTOGRAM.Enum(),
		Metric: []*dto.Metric{{Histogram: &dto.Histogram{SampleCount: proto.Uint64(3), SampleSum: proto.Float64(-2),
			Bucket: []*dto.Bucket{{UpperBound: proto.Float64(-1), CumulativeCount: proto.Uint64(3)}}}}},
	}, &dto.MetricFamily{
		Name: proto.String("native_only"), Type: dto.MetricType_HISTOGRAM.Enum(),
		Metric: []*dto.Metric{{Histogram: &dto.Histogram{SampleCount: proto.Uint64(5), SampleSum: proto.Float64(3),
			Schema: proto.Int32(3), ZeroThreshold: proto.Float64(1e-9),
			PositiveSpan: []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(2)}}, PositiveDelta: []int64{2, 1}}}},
	}, &dto.MetricFamily{
		Name: proto.String("negative_ts"), Type: dto.MetricType_GAUGE.Enum(),
		Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(math.Inf(-1))}, TimestampMs: proto.Int64(-5)}},
	})
	_, err := s.Put("c1", t0, fams)
	require.NoError(t, err)
	m, ok := s.Get("c1")
	require.True(t, ok)
	stored, _, err := s.Families("c1")
	require.NoError(t, err)
	var e exposition
	for i, f := range m.Families {
		block, err := s.ReadFamilyBlock(m, i, nil)
		require.NoError(t, err)
		mine := appendTextHeader(nil, f.Name, f.Help, f.Type)
		for len(block) > 0 {
			metric, rest, err := nextMetric(block)
			require.NoError(t, err)
			block = rest
			require.NoError(t, e.s.parse(metric))
			require.True(t, e.s.valid(f.Type), f.Name)
			mine = e.s.appendText(mine, f.Name, f.Type, true)
		}
		ref := proto.Clone(stored[i]).(*dto.MetricFamily)
		if ref.GetHelp() == "" {
			ref.Help = nil
		}
		var want bytes.Buffer
		_, err = expfmt.MetricFamilyToText(&want, ref)
		require.NoError(t, err)
		require.Equal(t, want.String(), string(mine), f.Name)
	}
}

// TestProtoTwoPasses forces every family over the buffering budget: the
// output must be the same bytes as with buffering.
func TestProtoTwoPasses(t *testing.T) {
	s := openStore(t)
	fleet(t, s, 5)
	for _, keepTS := range []bool{false, true} {
		h, _ := newHandler(s, Options{KeepTimestamps: keepTS})
		buffered := scrape(t, h, acceptProto).Body.Bytes()
		h.groupBudget = 1
		twoPass := scrape(t, h, acceptProto).Body.Bytes()
		require.NotEmpty(t, buffered)
		require.Equal(t, buffered, twoPass)
	}
}

// changingSource returns, for one cluster, a different block on every read:
// as if the cluster pushed between the two passes.
type changingSource struct {
	*store.Store
	cluster string
	reads   int
}

func (c *changingSource) ReadFamilyBlock(m store.Meta, i int, dst []byte) ([]byte, error) {
	b, err := c.Store.ReadFamilyBlock(m, i, dst)
	if err != nil || m.ClusterID != c.cluster {
		return b, err
	}
	c.reads++
	// One more series on every read.
	extra, _ := proto.Marshal(&dto.MetricFamily{Metric: []*dto.Metric{{Untyped: &dto.Untyped{Value: proto.Float64(float64(c.reads))}}}})
	for range c.reads {
		b = append(b, extra...)
	}
	return b, nil
}

func TestProtoBlockChangedBetweenPasses(t *testing.T) {
	s := openStore(t)
	stored := fleet(t, s, 3)
	src := &changingSource{Store: s, cluster: "cluster-001"}
	h, _ := newHandler(src, Options{})
	h.groupBudget = 1
	got := decode(t, scrape(t, h, acceptProto))
	var want []*dto.MetricFamily
	for id, fams := range stored {
		if id != src.cluster {
			want = append(want, fams...)
		}
	}
	// The changed cluster's blocks are replaced by padding; everything else
	// is intact and the stream still decodes.
	require.Equal(t, seriesLines(t, want, false), seriesLines(t, got, false))
	require.Positive(t, testutil.ToFloat64(h.metrics.skipped.WithLabelValues(reasonReadError)))
}

func TestPadding(t *testing.T) {
	sizes := []int{16383, 16384, 16385, 16386, 16387, 1<<21 - 1, 1 << 21, 1<<21 + 1, 1<<21 + 2}
	for n := 2; n < 300; n++ {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		b := appendPadding(nil, n)
		require.Len(t, b, n)
		var mf dto.MetricFamily
		require.NoError(t, proto.Unmarshal(append(b, 0x0a, 0x01, 'x'), &mf), "padding of %d bytes", n)
		require.Equal(t, "x", mf.GetName())
	}
}

// deletingSource deletes a cluster right after listing it.
type deletingSource struct {
	*store.Store
	victim string
}

func (d *deletingSource) List() []store.Meta {
	l := d.Store.List()
	if err := d.Delete(d.victim); err != nil {
		panic(err)
	}
	return l
}

func TestClusterDeletedDuringScrape(t *testing.T) {
	s := openStore(t)
	stored := fleet(t, s, 3)
	h, _ := newHandler(&deletingSource{Store: s, victim: "cluster-002"}, Options{})
	got := decode(t, scrape(t, h, acceptText))
	var want []*dto.MetricFamily
	for id, fams := range stored {
		if id != "cluster-002" {
			want = append(want, fams...)
		}
	}
	require.Equal(t, seriesLines(t, want, false), seriesLines(t, got, false))
	require.Zero(t, testutil.ToFloat64(h.metrics.skipped.WithLabelValues(reasonReadError)))
}

// failingSource fails every read of one cluster.
type failingSource struct {
	*store.Store
	cluster string
}

func (f *failingSource) ReadFamilyBlock(m store.Meta, i int, dst []byte) ([]byte, error) {
	if m.ClusterID == f.cluster {
		return nil, errors.New("disk on fire")
	}
	return f.Store.ReadFamilyBlock(m, i, dst)
}

func TestReadErrorsLeaveOutOneCluster(t *testing.T) {
	s := openStore(t)
	stored := fleet(t, s, 3)
	for _, accept := range []string{acceptText, acceptProto} {
		h, _ := newHandler(&failingSource{Store: s, cluster: "cluster-000"}, Options{})
		got := decode(t, scrape(t, h, accept))
		var want []*dto.MetricFamily
		for id, fams := range stored {
			if id != "cluster-000" {
				want = append(want, fams...)
			}
		}
		require.Equal(t, seriesLines(t, want, false), seriesLines(t, got, false))
		m, _ := s.Get("cluster-000")
		require.Equal(t, float64(len(m.Families)), testutil.ToFloat64(h.metrics.skipped.WithLabelValues(reasonReadError)))
	}
}

func TestExpiredSnapshotsAreNotServed(t *testing.T) {
	now := t0.Add(10 * time.Minute)
	s, err := store.Open(t.TempDir(), store.Options{NoSync: true, TTL: 5 * time.Minute, Now: func() time.Time { return now }}, nil, nil)
	require.NoError(t, err)
	_, err = s.Put("old", t0, withID(rich(1, t0.UnixMilli()), "old"))
	require.NoError(t, err)
	fresh := withID(rich(2, now.UnixMilli()), "fresh")
	_, err = s.Put("fresh", now, fresh)
	require.NoError(t, err)
	h, _ := newHandler(s, Options{})
	got := decode(t, scrape(t, h, acceptText))
	require.Equal(t, seriesLines(t, fresh, false), seriesLines(t, got, false))
}

// TestMemoryDoesNotFollowResponseSize checks what a scrape allocates against
// what it writes: the series pass through one family block of one cluster at
// a time (text) or a bounded group buffer (protobuf), never the response.
func TestMemoryDoesNotFollowResponseSize(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes what is allocated")
	}
	s := openStore(t)
	base := t232(t)
	const clusters = 150
	for i := range clusters {
		id := fmt.Sprintf("cluster-%03d", i)
		_, err := s.Put(id, t0, withID(base, id))
		require.NoError(t, err)
	}
	cases := []struct {
		accept string
		limit  uint64
	}{
		{acceptText, 2 << 20},
		// The group buffer grows by doubling up to its budget.
		{acceptProto, 2*protoGroupBudget + 2<<20},
	}
	for _, tc := range cases {
		h, _ := newHandler(s, Options{})
		req := httptest.NewRequest(http.MethodGet, "/federate", nil)
		req.Header.Set("Accept", tc.accept)
		w := &discard{h: http.Header{}}
		before := allocatedBytes()
		h.ServeHTTP(w, req)
		alloc := allocatedBytes() - before
		t.Logf("%s: wrote %d bytes, allocated %d", tc.accept, w.n, alloc)
		require.Greater(t, w.n, int64(8<<20))
		require.Less(t, alloc, tc.limit)
	}
}

// allocatedBytes is the process's cumulative heap allocation.
func allocatedBytes() uint64 {
	s := []runtimemetrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	runtimemetrics.Read(s)
	return s[0].Value.Uint64()
}
