package federate

import (
	"bufio"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/telemeter/telemeter/internal/store"
)

// Source is what the handler reads: the stored snapshots and their family
// blocks. *store.Store implements it.
type Source interface {
	List() []store.Meta
	ReadFamilyBlock(m store.Meta, i int, dst []byte) ([]byte, error)
}

// Options configure the handler.
type Options struct {
	// KeepTimestamps keeps the sample timestamps the clients sent. By default
	// they are stripped: the central Prometheus then stamps scrape time and
	// writes staleness markers when a series disappears.
	KeepTimestamps bool
	// Owns reports whether this node exports a cluster; nil exports all.
	Owns func(clusterID string) bool
}

const (
	formatText  = "text"
	formatProto = "protobuf"
	// protoGroupBudget bounds the bytes buffered to write one protobuf
	// MetricFamily message. A family whose blocks across all clusters exceed
	// it is written in two passes, so the message stays one per name and
	// memory stays bounded.
	protoGroupBudget = 4 << 20
	writeBufferSize  = 64 << 10
)

// NewHandler returns the /federate handler.
func NewHandler(src Source, o Options, logger *slog.Logger, reg prometheus.Registerer) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &handler{
		src:         src,
		keepTS:      o.KeepTimestamps,
		owns:        o.Owns,
		groupBudget: protoGroupBudget,
		logger:      logger.With("component", "federate"),
		metrics:     newMetrics(reg),
	}
}

type handler struct {
	src         Source
	keepTS      bool
	owns        func(string) bool
	groupBudget int // protoGroupBudget; tests lower it
	logger      *slog.Logger
	metrics     *metrics
}

// ref points at family f of snapshot c of a request's snapshot list.
type ref struct {
	name string
	c, f int32
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	start := time.Now()
	format := expfmt.NegotiateAccept(r.Header, expfmt.FmtText, expfmt.FmtProtoDelim)
	isProto := format.FormatType() == expfmt.TypeProtoDelim
	name := formatText
	if isProto {
		w.Header().Set("Content-Type", string(expfmt.FmtProtoDelim))
		name = formatProto
	} else {
		w.Header().Set("Content-Type", string(expfmt.FmtText))
	}
	h.metrics.requests.WithLabelValues(name).Inc()
	if r.Method == http.MethodHead {
		return
	}

	metas := h.src.List()
	if h.owns != nil {
		metas = slices.DeleteFunc(metas, func(m store.Meta) bool { return !h.owns(m.ClusterID) })
	}
	refs := familyRefs(metas)

	bw := bufio.NewWriterSize(w, writeBufferSize)
	ew := &exposition{h: h, w: bw, metas: metas, proto: isProto}
	for i := 0; i < len(refs); {
		j := i + 1
		for j < len(refs) && refs[j].name == refs[i].name {
			j++
		}
		if err := ew.family(refs[i:j]); err != nil {
			h.abort(r, err, ew.series)
			return
		}
		i = j
	}
	if err := bw.Flush(); err != nil {
		h.abort(r, err, ew.series)
		return
	}
	h.metrics.series.Add(float64(ew.series))
	h.metrics.duration.Observe(time.Since(start).Seconds())
}

// abort ends a response that failed while being written: the client went
// away or the connection broke. The status line is already sent.
func (h *handler) abort(r *http.Request, err error, series int) {
	h.metrics.series.Add(float64(series))
	if r.Context().Err() != nil {
		h.logger.Debug("federate client went away", "err", err)
		return
	}
	h.logger.Warn("federate response cut short", "err", err)
}

// familyRefs lists every family of every snapshot, sorted by name and, for
// one name, by the snapshots' order (their cluster IDs).
func familyRefs(metas []store.Meta) []ref {
	n := 0
	for _, m := range metas {
		n += len(m.Families)
	}
	refs := make([]ref, 0, n)
	for c, m := range metas {
		for f, fm := range m.Families {
			refs = append(refs, ref{name: fm.Name, c: int32(c), f: int32(f)})
		}
	}
	slices.SortStableFunc(refs, func(a, b ref) int { return strings.Compare(a.name, b.name) })
	return refs
}
