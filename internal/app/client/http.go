package client

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

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
	batch := c.lastBatch.Load()
	if batch == nil || r.Method == http.MethodHead {
		return
	}
	enc := expfmt.NewEncoder(w, format)
	for _, mf := range *batch {
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
