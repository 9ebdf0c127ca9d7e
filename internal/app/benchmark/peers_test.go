package benchmark

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// scrapeView flattens families into what a Prometheus scraping them would
// store: "name{l1="v1",...}" (labels sorted, _id left out when dropID) →
// the value formatted exactly. It is written from the data model, apart from
// the encoders it checks.
func scrapeView(families []*dto.MetricFamily, dropID bool) (map[string]string, error) {
	out := map[string]string{}
	var dups []string
	format := func(f float64) string {
		if math.IsInf(f, 1) {
			return "+Inf"
		}
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	put := func(name string, m *dto.Metric, extra []string, v float64) {
		var pairs []string
		for _, lp := range m.GetLabel() {
			if dropID && lp.GetName() == upload.IDLabel {
				continue
			}
			pairs = append(pairs, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		pairs = append(pairs, extra...)
		slices.Sort(pairs)
		key := name + "{" + strings.Join(pairs, ",") + "}"
		if _, dup := out[key]; dup {
			dups = append(dups, key)
		}
		out[key] = format(v)
	}
	for _, mf := range families {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				put(name, m, nil, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				put(name, m, nil, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				put(name, m, nil, m.GetUntyped().GetValue())
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					put(name, m, []string{fmt.Sprintf("quantile=%q", format(q.GetQuantile()))}, q.GetValue())
				}
				put(name+"_sum", m, nil, s.GetSampleSum())
				put(name+"_count", m, nil, float64(s.GetSampleCount()))
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				inf := false
				for _, b := range h.GetBucket() {
					inf = math.IsInf(b.GetUpperBound(), 1)
					put(name+"_bucket", m, []string{fmt.Sprintf("le=%q", format(b.GetUpperBound()))}, float64(b.GetCumulativeCount()))
				}
				if !inf {
					put(name+"_bucket", m, []string{`le="+Inf"`}, float64(h.GetSampleCount()))
				}
				put(name+"_sum", m, nil, h.GetSampleSum())
				put(name+"_count", m, nil, float64(h.GetSampleCount()))
			}
		}
	}
	if len(dups) > 0 {
		return nil, fmt.Errorf("series twice: %v", dups)
	}
	return out, nil
}

func mustScrapeView(t *testing.T, families []*dto.MetricFamily, dropID bool) map[string]string {
	t.Helper()
	v, err := scrapeView(families, dropID)
	require.NoError(t, err)
	return v
}

// decodeWriteRequest undoes a remote-write body and checks what every
// series must be: labels sorted and distinct, a __name__, one sample.
func decodeWriteRequest(body []byte) (*prompb.WriteRequest, error) {
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return nil, fmt.Errorf("the body is not a snappy block: %w", err)
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		return nil, err
	}
	for _, ts := range wr.Timeseries {
		if len(ts.Labels) == 0 || ts.Labels[0].Name != "__name__" {
			return nil, fmt.Errorf("series without a name first: %v", ts.Labels)
		}
		for i := 1; i < len(ts.Labels); i++ {
			if ts.Labels[i-1].Name >= ts.Labels[i].Name {
				return nil, fmt.Errorf("labels not sorted or repeated: %v", ts.Labels)
			}
		}
		if len(ts.Samples) != 1 {
			return nil, fmt.Errorf("%d samples in a series, want 1", len(ts.Samples))
		}
	}
	return &wr, nil
}

// writeRequestView is scrapeView of a remote-write request, with the
// timestamp every sample carries.
func writeRequestView(wr *prompb.WriteRequest, dropID bool) (map[string]string, map[int64]int) {
	out := map[string]string{}
	stamps := map[int64]int{}
	for _, ts := range wr.Timeseries {
		var name string
		var pairs []string
		for _, l := range ts.Labels {
			if l.Name == "__name__" {
				name = l.Value
				continue
			}
			if dropID && l.Name == upload.IDLabel {
				continue
			}
			pairs = append(pairs, fmt.Sprintf("%s=%q", l.Name, l.Value))
		}
		slices.Sort(pairs)
		v := ts.Samples[0].Value
		s := strconv.FormatFloat(v, 'g', -1, 64)
		if math.IsInf(v, 1) {
			s = "+Inf"
		}
		out[name+"{"+strings.Join(pairs, ",")+"}"] = s
		stamps[ts.Samples[0].Timestamp]++
	}
	return out, stamps
}

// TestPeerEncodings checks that the remote-write and text bodies carry
// exactly the samples of the telemeter body for the same cluster state:
// the same series (histograms and summaries as their parts, a +Inf bucket
// where the template has none), values and, for remote write, timestamps
// and the cluster's _id.
func TestPeerEncodings(t *testing.T) {
	for _, tc := range []struct {
		name       string
		text       string
		multiplier int
	}{
		{name: "T232", text: string(t232), multiplier: 1},
		{name: "every kind", text: kindsText, multiplier: 1},
		{name: "every kind times 3", text: kindsText, multiplier: 3},
		{name: "escapes", text: "# HELP odd_total A \\\\ back\\nslash.\n# TYPE odd_total counter\nodd_total{path=\"C:\\\\x\",q=\"say \\\"hi\\\"\",nl=\"a\\nb\",zone=\"é\"} 3\n", multiplier: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := parseTemplate([]byte(tc.text), tc.multiplier)
			require.NoError(t, err)
			ft := tmpl.flatten()
			require.Equal(t, tmpl.samples, ft.samples, "as many samples as the template counts")
			c := newCluster("bench-42", tmpl, rand.New(rand.NewPCG(3, 4)))
			for range 5 {
				tmpl.evolve(c)
			}
			const ts = int64(1_750_000_000_321)
			enc := newEncoder()

			body, err := enc.encode(tmpl, c, ts)
			require.NoError(t, err)
			families, err := upload.Decode(bytes.NewReader(body), upload.MediaTypeProtoDelim, upload.EncodingSnappy, upload.Limits{})
			require.NoError(t, err)
			want := mustScrapeView(t, families, false)
			require.Len(t, want, tmpl.samples)

			wr, err := decodeWriteRequest(slices.Clone(enc.encodeRemoteWrite(ft, c, ts)))
			require.NoError(t, err)
			got, stamps := writeRequestView(wr, false)
			require.Equal(t, want, got)
			require.Equal(t, map[int64]int{ts: tmpl.samples}, stamps)

			text := slices.Clone(enc.encodeText(ft, c))
			parser := expfmt.NewTextParser(model.LegacyValidation)
			parsed, err := parser.TextToMetricFamilies(bytes.NewReader(text))
			require.NoError(t, err, "the strict text parser takes the body:\n%s", text)
			var fams []*dto.MetricFamily
			for _, mf := range parsed {
				for _, m := range mf.GetMetric() {
					require.Nil(t, m.TimestampMs, "no timestamps for a Pushgateway")
					_, hasID := labelValue(m, upload.IDLabel)
					require.False(t, hasID, "no _id in the text body")
				}
				fams = append(fams, mf)
			}
			require.Equal(t, mustScrapeView(t, families, true), mustScrapeView(t, fams, true))
			for _, mf := range families {
				require.Equal(t, mf.GetType(), parsed[mf.GetName()].GetType(), "type of %s", mf.GetName())
				require.Equal(t, mf.GetHelp(), parsed[mf.GetName()].GetHelp(), "help of %s", mf.GetName())
			}
		})
	}
}

// peerServer is a fake remote-write receiver or Pushgateway on 127.0.0.1
// that decodes every body and keeps it per cluster.
type peerServer struct {
	t   *testing.T // for snapshot only, never in a handler
	srv *httptest.Server
	// answer picks the status of the nth request (from 1); nil: success.
	answer func(n int) int

	mu        sync.Mutex
	n         int
	pushes    map[string][]map[string]string // cluster ID → scrape views of its pushes
	stamps    map[string][]int64
	malformed []string
}

func newPeerServer(t *testing.T, target string) *peerServer {
	p := &peerServer{t: t, pushes: map[string][]map[string]string{}, stamps: map[string][]int64{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, _ *http.Request) {
		p.bad("a peer was asked to authorize")
		w.WriteHeader(http.StatusNotFound)
	})
	switch target {
	case TargetRemoteWrite:
		mux.HandleFunc("/api/v1/write", p.remoteWrite)
	case TargetPushgateway:
		mux.HandleFunc("/metrics/job/{job}/_id/{id}", p.pushgateway)
	}
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *peerServer) bad(format string, args ...any) {
	p.mu.Lock()
	p.malformed = append(p.malformed, fmt.Sprintf(format, args...))
	p.mu.Unlock()
}

func (p *peerServer) expectHeaders(r *http.Request, method string, headers map[string]string) {
	if r.Method != method {
		p.bad("method %s, want %s", r.Method, method)
	}
	for k, v := range headers {
		if got := r.Header.Get(k); got != v {
			p.bad("header %s: %q, want %q", k, got, v)
		}
	}
	if a := r.Header.Get("Authorization"); a != "" {
		p.bad("a peer got an Authorization header %q", a)
	}
}

func (p *peerServer) remoteWrite(w http.ResponseWriter, r *http.Request) {
	p.expectHeaders(r, http.MethodPost, map[string]string{
		"Content-Encoding":                  "snappy",
		"Content-Type":                      "application/x-protobuf",
		"X-Prometheus-Remote-Write-Version": "0.1.0",
	})
	body, err := io.ReadAll(r.Body)
	if err != nil {
		p.bad("read body: %v", err)
		return
	}
	wr, err := decodeWriteRequest(body)
	if err != nil {
		p.bad("decode write request: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	view, stamps := writeRequestView(wr, true)
	ids := map[string]bool{}
	for _, ts := range wr.Timeseries {
		for _, l := range ts.Labels {
			if l.Name == upload.IDLabel {
				ids[l.Value] = true
			}
		}
	}
	if len(ids) != 1 || len(stamps) != 1 {
		p.bad("one push carries one _id and one timestamp, got %v and %v", ids, stamps)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var id string
	var stamp int64
	for id = range ids {
	}
	for stamp = range stamps {
	}
	p.record(w, id, view, stamp, http.StatusNoContent)
}

func (p *peerServer) pushgateway(w http.ResponseWriter, r *http.Request) {
	p.expectHeaders(r, http.MethodPut, map[string]string{"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
	if job := r.PathValue("job"); job != PushgatewayJob {
		p.bad("job %q", job)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	parsed, err := parser.TextToMetricFamilies(r.Body)
	if err != nil {
		p.bad("parse text body: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var fams []*dto.MetricFamily
	for _, mf := range parsed {
		fams = append(fams, mf)
	}
	view, err := scrapeView(fams, true)
	if err != nil {
		p.bad("pushgateway body: %v", err)
	}
	p.record(w, r.PathValue("id"), view, 0, http.StatusOK)
}

func (p *peerServer) record(w http.ResponseWriter, id string, view map[string]string, stamp int64, ok int) {
	p.mu.Lock()
	p.n++
	code := ok
	if p.answer != nil {
		if c := p.answer(p.n); c != 0 {
			code = c
		}
	}
	p.pushes[id] = append(p.pushes[id], view)
	p.stamps[id] = append(p.stamps[id], stamp)
	p.mu.Unlock()
	w.WriteHeader(code)
}

func (p *peerServer) snapshot() (map[string][]map[string]string, map[string][]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Empty(p.t, p.malformed, "malformed requests")
	return p.pushes, p.stamps
}

// TestRunPeers pushes to fake peers and checks that every cluster's pushes
// arrive where the peer expects them, without any token exchange, that the
// values evolve between pushes, and that the report counts what the peer
// answered.
func TestRunPeers(t *testing.T) {
	for _, tc := range []struct {
		target string
		path   string
		ok     string
	}{
		{target: TargetRemoteWrite, path: "/api/v1/write", ok: "204"},
		{target: TargetPushgateway, path: "", ok: "200"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			p := newPeerServer(t, tc.target)
			o := DefaultOptions()
			o.Target = tc.target
			o.To = p.srv.URL + tc.path
			o.Listen = ""
			o.Logger = testLogger(t)
			o.Seed = 9
			o.RequestTimeout = 20 * time.Second
			o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
			o.Mode = ModeSaturate
			o.Workers = 5
			o.Count = 3
			o.Concurrency = 2
			o.IDPrefix = "peer-"

			began := time.Now()
			rep, _ := runBounded(t, o, 2*time.Minute)
			pushes, stamps := p.snapshot()

			require.Len(t, pushes, o.Workers)
			for i := range o.Workers {
				id := fmt.Sprintf("peer-%d", i)
				got := pushes[id]
				require.Len(t, got, o.Count, "pushes of %s", id)
				counter := `http_requests_total{code="200",handler="/upload"}`
				for _, view := range got {
					require.Len(t, view, kindsSamples)
					require.Contains(t, view, counter)
				}
				value := func(k int) float64 {
					v, err := strconv.ParseFloat(got[k][counter], 64)
					require.NoError(t, err)
					return v
				}
				for k := 1; k < len(got); k++ {
					require.GreaterOrEqual(t, value(k), value(k-1), "counters never go down")
				}
				require.Greater(t, value(o.Count-1), value(0), "counters grow")
				if tc.target == TargetRemoteWrite {
					for k, ts := range stamps[id] {
						require.InDelta(t, began.UnixMilli(), ts, float64(time.Minute.Milliseconds()))
						if k > 0 {
							require.Greater(t, ts, stamps[id][k-1], "timestamps move on")
						}
					}
				}
			}

			total := int64(o.Workers * o.Count)
			require.Equal(t, tc.target, rep.Target)
			require.Equal(t, total, rep.Uploads)
			require.Equal(t, total, rep.Accepted)
			require.Equal(t, map[string]int64{tc.ok: total}, rep.Status)
			require.Equal(t, total*kindsSamples, rep.Samples)
			require.Zero(t, rep.Authorizations)
		})
	}
}

// TestRunPeerRefusals: a peer's refusals are counted, and a 401 is not a
// reason to authorize or push again.
func TestRunPeerRefusals(t *testing.T) {
	p := newPeerServer(t, TargetRemoteWrite)
	p.answer = func(n int) int {
		switch n % 3 {
		case 1:
			return http.StatusUnauthorized
		case 2:
			return http.StatusBadRequest
		}
		return 0
	}
	o := DefaultOptions()
	o.Target = TargetRemoteWrite
	o.To = p.srv.URL + "/api/v1/write"
	o.Listen = ""
	o.Logger = testLogger(t)
	o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
	o.Mode = ModeSaturate
	o.Workers = 3
	o.Count = 2
	o.Concurrency = 1

	rep, _ := runBounded(t, o, time.Minute)
	pushes, _ := p.snapshot()
	n := 0
	for _, got := range pushes {
		n += len(got)
	}
	require.Equal(t, 6, n, "one request per push, none repeated")
	require.Equal(t, map[string]int64{"401": 2, "400": 2, "204": 2}, rep.Status)
	require.Equal(t, int64(4), rep.NonSuccess)
	require.Zero(t, rep.Reauthorizations)
	require.Zero(t, rep.Authorizations)
}

func TestPushgatewayURL(t *testing.T) {
	for _, tc := range []struct {
		name, base, id, want string
	}{
		{name: "plain", base: "http://pg:9091", id: "benchmark-007", want: "http://pg:9091/metrics/job/telemeter/_id/benchmark-007"},
		{name: "trailing slash", base: "http://pg:9091/", id: "a", want: "http://pg:9091/metrics/job/telemeter/_id/a"},
		{name: "escaped", base: "http://pg", id: "a b?c", want: "http://pg/metrics/job/telemeter/_id/a%20b%3Fc"},
		{name: "slash goes base64", base: "http://pg", id: "a/b", want: "http://pg/metrics/job/telemeter/_id@base64/YS9i"},
		{name: "empty", base: "http://pg", id: "", want: "http://pg/metrics/job/telemeter/_id@base64/="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, pushgatewayURL(tc.base, tc.id))
		})
	}
}

// TestRunIDsFile simulates exactly the clusters of --ids-file.
func TestRunIDsFile(t *testing.T) {
	f := newFakeServer(t)
	o := f.options(t)
	o.MetricsFile = writeFile(t, "kinds.txt", kindsText)
	o.IDsFile = writeFile(t, "ids.txt", "# owned by node-0\nalpha\n\n  beta  \ngamma\n")
	o.Workers = 99 // replaced by the file
	o.Mode = ModeSaturate
	o.Count = 2
	o.Concurrency = 2

	rep, _ := runBounded(t, o, time.Minute)
	_, uploads, _ := f.snapshot()
	require.ElementsMatch(t, []string{"alpha", "beta", "gamma"}, mapKeys(uploads))
	require.Equal(t, 3, rep.Clusters)
	require.Equal(t, int64(6), rep.Accepted)

	for name, content := range map[string]string{"duplicate": "a\nb\na\n", "empty": "# nothing\n\n"} {
		t.Run(name, func(t *testing.T) {
			o := f.options(t)
			o.IDsFile = writeFile(t, "ids.txt", content)
			_, err := Run(t.Context(), o)
			require.ErrorContains(t, err, "--ids-file")
		})
	}
}

// BenchmarkPushPeersT232 measures what one push of T232 costs the
// generator for each peer.
func BenchmarkPushPeersT232(b *testing.B) {
	tmpl, err := parseTemplate(t232, 1)
	require.NoError(b, err)
	ft := tmpl.flatten()
	for _, target := range []string{TargetRemoteWrite, TargetPushgateway} {
		b.Run(target, func(b *testing.B) {
			c := newCluster("bench-0", tmpl, rand.New(rand.NewPCG(1, 1)))
			enc := newEncoder()
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				tmpl.evolve(c)
				if target == TargetRemoteWrite {
					enc.encodeRemoteWrite(ft, c, 1_750_000_000_000)
				} else {
					enc.encodeText(ft, c)
				}
			}
			b.ReportMetric((cpuTime()-cpu).Seconds()*1e6/float64(b.N), "cpu-µs/push")
		})
	}
}
