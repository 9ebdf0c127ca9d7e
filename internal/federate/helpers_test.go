package federate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/store"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// t232 parses the reference payload.
func t232(tb testing.TB) []*dto.MetricFamily {
	tb.Helper()
	f, err := os.Open("testdata/timeseries.txt")
	require.NoError(tb, err)
	defer func() { _ = f.Close() }()
	p := expfmt.NewTextParser(model.LegacyValidation)
	byName, err := p.TextToMetricFamilies(f)
	require.NoError(tb, err)
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		out = append(out, mf)
	}
	return out
}

func lp(kv ...string) []*dto.LabelPair {
	var out []*dto.LabelPair
	for i := 0; i < len(kv); i += 2 {
		out = append(out, &dto.LabelPair{Name: proto.String(kv[i]), Value: proto.String(kv[i+1])})
	}
	return out
}

// rich is a payload with every metric type and awkward values; seed varies
// the values so that clusters differ.
func rich(seed int, ts int64) []*dto.MetricFamily {
	f := float64(seed)
	return []*dto.MetricFamily{
		{
			Name: proto.String("http_requests_total"), Help: proto.String("Requests by code.\nSecond line with \\ backslash."),
			Type: dto.MetricType_COUNTER.Enum(),
			Metric: []*dto.Metric{
				{Label: lp("code", "200", "path", `/a"b\c`+"\n"), Counter: &dto.Counter{Value: proto.Float64(1e21 + f)}, TimestampMs: proto.Int64(ts)},
				{Label: lp("code", "500", "path", "ünïcødé"), Counter: &dto.Counter{Value: proto.Float64(f)}, TimestampMs: proto.Int64(ts - 500)},
			},
		},
		{
			Name: proto.String("queue_depth"), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{
				{Label: lp("q", "a"), Gauge: &dto.Gauge{Value: proto.Float64(-1)}, TimestampMs: proto.Int64(ts)},
				{Label: lp("q", "b"), Gauge: &dto.Gauge{Value: proto.Float64(math.NaN())}},
				{Label: lp("q", "c"), Gauge: &dto.Gauge{Value: proto.Float64(1.5e-7 * (f + 1))}},
				{Gauge: &dto.Gauge{Value: proto.Float64(0)}},
			},
		},
		{
			Name: proto.String("request_duration_seconds"), Help: proto.String("Latency."), Type: dto.MetricType_HISTOGRAM.Enum(),
			Metric: []*dto.Metric{
				{
					Label: lp("handler", "upload"),
					Histogram: &dto.Histogram{
						SampleCount: proto.Uint64(uint64(10 + seed)), SampleSum: proto.Float64(2.5 + f),
						Bucket: []*dto.Bucket{
							{UpperBound: proto.Float64(0.005), CumulativeCount: proto.Uint64(1)},
							{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(3)},
							{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(9)},
						},
					},
					TimestampMs: proto.Int64(ts),
				},
				{
					Label: lp("handler", "authorize"),
					Histogram: &dto.Histogram{
						SampleCountFloat: proto.Float64(4.5), SampleSum: proto.Float64(1),
						Bucket: []*dto.Bucket{
							{UpperBound: proto.Float64(0.5), CumulativeCountFloat: proto.Float64(2.5)},
							{UpperBound: proto.Float64(math.Inf(1)), CumulativeCountFloat: proto.Float64(4.5)},
						},
					},
				},
			},
		},
		{
			Name: proto.String("rpc_latency_seconds"), Type: dto.MetricType_SUMMARY.Enum(),
			Metric: []*dto.Metric{{
				Label: lp("service", "auth"),
				Summary: &dto.Summary{
					SampleCount: proto.Uint64(7), SampleSum: proto.Float64(1.25 * f),
					Quantile: []*dto.Quantile{{Quantile: proto.Float64(0.5), Value: proto.Float64(0.1)}, {Quantile: proto.Float64(0.99), Value: proto.Float64(0.9)}},
				},
				TimestampMs: proto.Int64(ts),
			}},
		},
		{
			Name: proto.String("build_info"), Help: proto.String(""), Type: dto.MetricType_UNTYPED.Enum(),
			Metric: []*dto.Metric{{Label: lp("version", fmt.Sprintf("1.%d", seed)), Untyped: &dto.Untyped{Value: proto.Float64(1)}}},
		},
	}
}

// withID returns a deep copy of families with the cluster's _id label.
func withID(families []*dto.MetricFamily, id string) []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, len(families))
	for i, mf := range families {
		c := proto.Clone(mf).(*dto.MetricFamily)
		for _, m := range c.Metric {
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String("_id"), Value: proto.String(id)})
		}
		out[i] = c
	}
	return out
}

func openStore(tb testing.TB) *store.Store {
	tb.Helper()
	s, err := store.Open(tb.TempDir(), store.Options{NoSync: true}, nil, nil)
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, s.Close()) })
	return s
}

const (
	acceptText       = "text/plain;version=0.0.4"
	acceptProto      = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
	acceptPrometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

// scrape serves one request and returns the recorded response.
func scrape(tb testing.TB, h http.Handler, accept string) *httptest.ResponseRecorder {
	tb.Helper()
	req := httptest.NewRequest(http.MethodGet, "/federate", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// decode parses a response strictly: the text parser refuses a second TYPE
// or HELP line for a name; for protobuf, a second message for a name fails
// the test.
func decode(tb testing.TB, rec *httptest.ResponseRecorder) []*dto.MetricFamily {
	tb.Helper()
	require.Equal(tb, http.StatusOK, rec.Code)
	body := rec.Body.Bytes()
	var out []*dto.MetricFamily
	switch ct := rec.Header().Get("Content-Type"); ct {
	case string(expfmt.FmtText):
		p := expfmt.NewTextParser(model.LegacyValidation)
		byName, err := p.TextToMetricFamilies(bytes.NewReader(body))
		require.NoError(tb, err, "strict text parser refused the output")
		for _, mf := range byName {
			out = append(out, mf)
		}
		for name := range byName {
			require.Equal(tb, 1, strings.Count(string(body), "# TYPE "+name+" "), "TYPE lines for %s", name)
		}
	case string(expfmt.FmtProtoDelim):
		dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.FmtProtoDelim)
		seen := map[string]bool{}
		for {
			mf := &dto.MetricFamily{}
			err := dec.Decode(mf)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(tb, err)
			require.False(tb, seen[mf.GetName()], "second message for %s", mf.GetName())
			seen[mf.GetName()] = true
			out = append(out, mf)
		}
	default:
		tb.Fatalf("unexpected Content-Type %q", ct)
	}
	return out
}

// seriesLines renders families as canonical text lines, one family type
// prefix per line, labels sorted, timestamps dropped unless keepTS: a set to
// compare what was stored with what was exported.
func seriesLines(tb testing.TB, families []*dto.MetricFamily, keepTS bool) []string {
	tb.Helper()
	var lines []string
	for _, mf := range families {
		for _, m := range mf.Metric {
			c := proto.Clone(m).(*dto.Metric)
			sort.Slice(c.Label, func(i, j int) bool { return c.Label[i].GetName() < c.Label[j].GetName() })
			if !keepTS {
				c.TimestampMs = nil
			}
			typ := mf.GetType()
			if typ == dto.MetricType_GAUGE_HISTOGRAM {
				typ = dto.MetricType_HISTOGRAM
			}
			var buf bytes.Buffer
			_, err := expfmt.MetricFamilyToText(&buf, &dto.MetricFamily{Name: mf.Name, Type: &typ, Metric: []*dto.Metric{c}})
			require.NoError(tb, err)
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if !strings.HasPrefix(l, "#") {
					lines = append(lines, l)
				}
			}
		}
	}
	slices.Sort(lines)
	return lines
}

func newHandler(src Source, o Options) (*handler, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return NewHandler(src, o, nil, reg).(*handler), reg
}
