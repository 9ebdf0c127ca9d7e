package client

import (
	"bytes"
	"fmt"
	"math"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/telemeter/telemeter/internal/upload"
	"github.com/telemeter/telemeter/internal/web"
)

// handler serves /metrics, /healthz, /healthz/ready, /federate and /-/reload.
func (c *client) handler(reg *prometheus.Registry) http.Handler {
	m := web.NewMetrics(reg, "telemeter_client")
	mux := http.NewServeMux()
	web.Health(mux, c.ready)
	mux.Handle("/metrics", m.Wrap("metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
	mux.Handle("/federate", m.Wrap("federate", http.HandlerFunc(c.federate)))
	mux.Handle("/-/reload", m.Wrap("reload", http.HandlerFunc(c.reloadHandler)))
	return mux
}

// federate serves the last batch pushed, exactly as it left, in the format
// the request negotiates: the answer to "what exactly leaves my site?".
// Before the first successful push the answer is empty.
func (c *client) federate(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	format := expfmt.NegotiateAccept(r.Header, expfmt.NewFormat(expfmt.TypeProtoDelim), expfmt.NewFormat(expfmt.TypeTextPlain))
	w.Header().Set("Content-Type", string(format))
	body := c.lastBatch.Load()
	if body == nil || r.Method == http.MethodHead {
		return
	}
	batch, err := upload.Decode(bytes.NewReader(*body), upload.MediaTypeProtoDelim, upload.EncodingSnappy, upload.Limits{
		CompressedBytes: int64(len(*body)), DecodedBytes: math.MaxInt32, Families: math.MaxInt32, Series: math.MaxInt32,
		LabelsPerSeries: math.MaxInt32, NameLength: math.MaxInt32, ValueLength: math.MaxInt32,
	})
	if err != nil { // what we encoded ourselves: a bug
		c.logger.Error("decode the last batch", "err", err)
		http.Error(w, "cannot decode the last batch", http.StatusInternalServerError)
		return
	}
	enc := expfmt.NewEncoder(w, format)
	for _, mf := range batch {
		if err := enc.Encode(mf); err != nil {
			c.logger.Debug("write federate answer", "err", err)
			return
		}
	}
	if closer, ok := enc.(expfmt.Closer); ok {
		_ = closer.Close()
	}
}

// reloadHandler reloads on POST and answers 200, or 500 with the reason the
// running configuration was kept.
func (c *client) reloadHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed: POST to reload", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := c.reload(); err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, "reload failed, running configuration kept: %v\n", err)
		return
	}
	_, _ = fmt.Fprintln(w, "reloaded")
}
