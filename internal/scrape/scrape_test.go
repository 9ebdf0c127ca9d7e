package scrape

import (
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

func families(n int) []*dto.MetricFamily {
	mf := &dto.MetricFamily{Name: proto.String("up"), Help: proto.String("h"), Type: dto.MetricType_GAUGE.Enum()}
	for i := range n {
		mf.Metric = append(mf.Metric, &dto.Metric{
			Label:       []*dto.LabelPair{{Name: proto.String("job"), Value: proto.String(strings.Repeat("j", i+1))}},
			Gauge:       &dto.Gauge{Value: proto.Float64(float64(i))},
			TimestampMs: proto.Int64(1700000000000),
		})
	}
	return []*dto.MetricFamily{mf}
}

// prometheus is a fake /federate that answers in the format the request
// negotiates (or forced), and records what it was asked.
type fakePrometheus struct {
	mu      sync.Mutex
	forced  expfmt.Format
	queries [][]string
	auth    []string
	accept  []string
	n       int
}

func (p *fakePrometheus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.queries = append(p.queries, r.URL.Query()["match[]"])
	p.auth = append(p.auth, r.Header.Get("Authorization"))
	p.accept = append(p.accept, r.Header.Get("Accept"))
	forced, n := p.forced, p.n
	p.mu.Unlock()
	if r.URL.Path != "/federate" {
		http.NotFound(w, r)
		return
	}
	format := expfmt.NegotiateAccept(r.Header, expfmt.NewFormat(expfmt.TypeProtoDelim), expfmt.NewFormat(expfmt.TypeTextPlain))
	if forced != "" {
		format = forced
	}
	w.Header().Set("Content-Type", string(format))
	enc := expfmt.NewEncoder(w, format)
	for _, mf := range families(n) {
		if err := enc.Encode(mf); err != nil {
			panic(err)
		}
	}
}

func newScraper(t *testing.T, o Options) (*Scraper, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(o, slog.New(slog.DiscardHandler), reg)
	require.NoError(t, err)
	return s, reg
}

func TestScrapeNegotiatesAndDecodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		forced expfmt.Format
		want   string
	}{
		{"protobuf preferred", "", "application/vnd.google.protobuf"},
		{"text fallback", expfmt.NewFormat(expfmt.TypeTextPlain), "text/plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &fakePrometheus{forced: tc.forced, n: 3}
			srv := httptest.NewServer(p)
			defer srv.Close()
			s, reg := newScraper(t, Options{From: srv.URL, Token: "secret"})

			rules := []string{`{__name__="up"}`, `ALERTS{alertstate="firing"}`}
			got, err := s.Scrape(t.Context(), rules)
			require.NoError(t, err)
			require.Len(t, got, 1)
			require.Len(t, got[0].Metric, 3)
			require.Equal(t, "jjj", got[0].Metric[2].Label[0].GetValue())
			require.Equal(t, int64(1700000000000), got[0].Metric[2].GetTimestampMs())

			require.Equal(t, [][]string{rules}, p.queries, "one match[] per rule")
			require.Equal(t, []string{"Bearer secret"}, p.auth)
			require.True(t, strings.HasPrefix(p.accept[0], "application/vnd.google.protobuf"), p.accept[0])
			require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.scrapes.WithLabelValues("success")))
			n, err := testutil.GatherAndCount(reg, "telemeter_client_scrape_duration_seconds")
			require.NoError(t, err)
			require.Equal(t, 1, n)
		})
	}
}

func TestScrapeTokenFileIsReadEveryScrape(t *testing.T) {
	p := &fakePrometheus{n: 1}
	srv := httptest.NewServer(p)
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("one\n"), 0o600))
	s, _ := newScraper(t, Options{From: srv.URL, Token: "ignored", TokenFile: path})
	_, err := s.Scrape(t.Context(), []string{"up"})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte("two"), 0o600))
	_, err = s.Scrape(t.Context(), []string{"up"})
	require.NoError(t, err)
	require.Equal(t, []string{"Bearer one", "Bearer two"}, p.auth)

	require.NoError(t, os.Remove(path))
	_, err = s.Scrape(t.Context(), []string{"up"})
	require.ErrorContains(t, err, "read token file")
	require.Len(t, p.auth, 2, "no request without the token")
}

func TestScrapeNoTokenSendsNoAuthorization(t *testing.T) {
	p := &fakePrometheus{n: 1}
	srv := httptest.NewServer(p)
	defer srv.Close()
	s, _ := newScraper(t, Options{From: srv.URL})
	_, err := s.Scrape(t.Context(), []string{"up"})
	require.NoError(t, err)
	require.Equal(t, []string{""}, p.auth)
}

func TestScrapeErrorAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
		body string
		want string
	}{
		{"unavailable", http.StatusServiceUnavailable, "starting up\nmore", "answered 503 Service Unavailable: starting up"},
		{"bad match", http.StatusBadRequest, "bad_data: parse error", "answered 400 Bad Request: bad_data: parse error"},
		{"forbidden", http.StatusForbidden, "", "answered 403 Forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, tc.body, tc.code)
			}))
			defer srv.Close()
			s, _ := newScraper(t, Options{From: srv.URL})
			_, err := s.Scrape(t.Context(), []string{"up"})
			require.ErrorContains(t, err, "scrape federate: prometheus at "+srv.URL+"/federate "+tc.want)
			require.NotContains(t, err.Error(), "more")
			require.Equal(t, 1.0, testutil.ToFloat64(s.metrics.scrapes.WithLabelValues("failure")))
		})
	}
}

func TestScrapeBodyIsCapped(t *testing.T) {
	p := &fakePrometheus{n: 2000, forced: expfmt.NewFormat(expfmt.TypeTextPlain)}
	srv := httptest.NewServer(p)
	defer srv.Close()
	s, _ := newScraper(t, Options{From: srv.URL, Limits: upload.Limits{CompressedBytes: 4 << 10, DecodedBytes: 4 << 10}})
	_, err := s.Scrape(t.Context(), []string{"up"})
	require.ErrorIs(t, err, upload.ErrTooLarge)
	require.ErrorContains(t, err, "narrow the match rules")

	s, _ = newScraper(t, Options{From: srv.URL, Limits: upload.Limits{Series: 100}})
	_, err = s.Scrape(t.Context(), []string{"up"})
	require.ErrorIs(t, err, upload.ErrTooLarge)
}

func TestScrapeCAFile(t *testing.T) {
	p := &fakePrometheus{n: 1}
	srv := httptest.NewTLSServer(p)
	defer srv.Close()
	caPath := filepath.Join(t.TempDir(), "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	require.NoError(t, os.WriteFile(caPath, cert, 0o600))

	s, _ := newScraper(t, Options{From: srv.URL, CAFile: caPath})
	_, err := s.Scrape(t.Context(), []string{"up"})
	require.NoError(t, err)

	s, _ = newScraper(t, Options{From: srv.URL})
	_, err = s.Scrape(t.Context(), []string{"up"})
	require.ErrorContains(t, err, "certificate")

	require.NoError(t, os.WriteFile(caPath, []byte("not pem"), 0o600))
	_, err = New(Options{From: srv.URL, CAFile: caPath}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.ErrorContains(t, err, "no PEM certificate")
}

func TestFederateURL(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{"host", "http://127.0.0.1:9090", "http://127.0.0.1:9090/federate", ""},
		{"trailing slash", "http://prom:9090/", "http://prom:9090/federate", ""},
		{"path prefix", "https://prom/prometheus", "https://prom/prometheus/federate", ""},
		{"already federate", "http://prom/federate?match[]=x", "http://prom/federate", ""},
		{"no scheme", "prom:9090", "", "want http(s)"},
		{"no host", "http:///x", "", "want http(s)"},
		{"garbage", "http://[::1", "", "parse prometheus url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := FederateURL(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, u.String())
		})
	}
}
