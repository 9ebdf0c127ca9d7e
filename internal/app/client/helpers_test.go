package client

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

// sourcePrometheus serves /federate like a Prometheus server would, from a
// fixed set of families whose timestamps it sets to the time of the request.
// Like a Prometheus that ignored match[], it answers every series, so that
// what arrives at the receiver shows the client's own allowlist at work.
type sourcePrometheus struct {
	srv      *httptest.Server
	families []*dto.MetricFamily
	encoded  []byte // served as is when set (benchmarks)

	mu      sync.Mutex
	matches [][]string
	auth    []string
}

func newSourcePrometheus(t testing.TB, families []*dto.MetricFamily) *sourcePrometheus {
	p := &sourcePrometheus{families: families}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

// loadT232 reads the project's reference payload.
func loadT232(t testing.TB) []*dto.MetricFamily {
	t.Helper()
	f, err := os.Open("../../../testdata/timeseries.txt")
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	byName, err := textParse(f)
	require.NoError(t, err)
	var out []*dto.MetricFamily
	for _, mf := range byName {
		out = append(out, mf)
	}
	upload.SortFamilies(out)
	return out
}

func textParse(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(r)
}

func (p *sourcePrometheus) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.matches = append(p.matches, r.URL.Query()["match[]"])
	p.auth = append(p.auth, r.Header.Get("Authorization"))
	p.mu.Unlock()
	if r.URL.Path != "/federate" {
		http.NotFound(w, r)
		return
	}
	if p.encoded != nil {
		w.Header().Set("Content-Type", upload.MediaTypeProtoDelim)
		_, _ = w.Write(p.encoded)
		return
	}
	now := time.Now().UnixMilli()
	format := expfmt.NegotiateAccept(r.Header, expfmt.NewFormat(expfmt.TypeProtoDelim), expfmt.NewFormat(expfmt.TypeTextPlain))
	w.Header().Set("Content-Type", string(format))
	enc := expfmt.NewEncoder(w, format)
	for _, mf := range p.families {
		mf = proto.Clone(mf).(*dto.MetricFamily)
		for _, m := range mf.Metric {
			m.TimestampMs = proto.Int64(now)
		}
		if err := enc.Encode(mf); err != nil {
			return
		}
	}
}

// receiver is a telemeter server reduced to the protocol: /authorize checks
// the cluster token and returns _id; /upload decodes under the default limits.
type receiver struct {
	srv     *httptest.Server
	token   string
	discard bool // benchmarks: count, do not keep

	mu        sync.Mutex
	status    int // answer to /upload when not 0
	uploads   [][]*dto.MetricFamily
	bytes     int
	authCount int
	notify    chan struct{}
}

func newReceiver(t testing.TB, token string) *receiver {
	rc := &receiver{token: token, notify: make(chan struct{}, 1000)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /authorize", rc.authorize)
	mux.HandleFunc("POST /upload", rc.upload)
	rc.srv = httptest.NewServer(mux)
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) setToken(token string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.token = token
}

func (rc *receiver) authorize(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	want := "Bearer " + rc.token
	rc.mu.Unlock()
	if r.Header.Get("Authorization") != want {
		http.Error(w, "unknown token", http.StatusUnauthorized)
		return
	}
	id := r.URL.Query().Get("id")
	rc.mu.Lock()
	rc.authCount++
	rc.mu.Unlock()
	_ = json.NewEncoder(w).Encode(upload.AuthorizeResponse{
		Version: 1, Token: "jwt-for-" + id, ExpiresInSeconds: 3600,
		Labels: map[string]string{upload.IDLabel: id},
	})
}

func (rc *receiver) upload(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer jwt-for-c1" {
		http.Error(w, "bad jwt", http.StatusUnauthorized)
		return
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(r.Body)
	rc.mu.Lock()
	status := rc.status
	rc.bytes = buf.Len()
	rc.mu.Unlock()
	if status != 0 {
		http.Error(w, "scripted", status)
		return
	}
	if rc.discard {
		return
	}
	fams, err := upload.Decode(&buf, r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"), upload.Limits{})
	if err != nil {
		http.Error(w, err.Error(), upload.StatusCode(err))
		return
	}
	rc.mu.Lock()
	rc.uploads = append(rc.uploads, fams)
	rc.mu.Unlock()
	rc.notify <- struct{}{}
}

func (rc *receiver) last() []*dto.MetricFamily {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.uploads) == 0 {
		return nil
	}
	return rc.uploads[len(rc.uploads)-1]
}

// waitUpload waits, boundedly, for the next upload and returns it.
func (rc *receiver) waitUpload(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	select {
	case <-rc.notify:
		return rc.last()
	case <-time.After(30 * time.Second):
		t.Fatal("no upload within 30s")
		return nil
	}
}

func labelValue(m *dto.Metric, name string) (string, bool) {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue(), true
		}
	}
	return "", false
}

func familyNames(fams []*dto.MetricFamily) []string {
	var names []string
	for _, mf := range fams {
		names = append(names, mf.GetName())
	}
	return names
}
