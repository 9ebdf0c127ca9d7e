package remotewrite

import (
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/value"

	"github.com/telemeter/telemeter/internal/upload"
)

// ToFamilies turns a write request into families for the store: every series
// becomes one untyped metric holding its newest sample (timestamp included),
// one family per metric name, families sorted by name and metrics by labels.
// A series sent several times in the request (Prometheus sends one entry per
// sample) is kept once, with the newest sample; on equal timestamps the
// later entry wins.
//
// Labels are checked as the remote-write specification asks: a non-empty
// __name__ that is a legal metric name, legal label names, no name twice,
// valid UTF-8 values. Names starting with "__" other than __name__ are
// refused, as on /upload. A label with an empty value is dropped (Prometheus
// treats it as absent). Unsorted labels are sorted.
//
// A staleness marker stays in the result as a NaN with value.StaleNaN's bits:
// it says the series ended, which Merge applies. Errors wrap upload.ErrInvalid.
func ToFamilies(wr *WriteRequest) ([]*dto.MetricFamily, error) {
	nLabels := 0
	for i := range wr.Series {
		if len(wr.Series[i].Samples) > 0 {
			nLabels += len(wr.Series[i].Labels)
		}
	}
	b := famBuilder{
		byName: make(map[string]*dto.MetricFamily),
		seen:   make(map[uint64][]*dto.Metric),
		seed:   maphash.MakeSeed(),
		strs:   make([]string, 0, 2*nLabels),
		pairs:  make([]dto.LabelPair, nLabels),
		ptrs:   make([]*dto.LabelPair, 0, nLabels),
	}
	for i := range wr.Series {
		if err := b.add(&wr.Series[i]); err != nil {
			return nil, err
		}
	}
	families := make([]*dto.MetricFamily, 0, len(b.byName))
	for _, mf := range b.byName {
		slices.SortFunc(mf.Metric, compareMetrics)
		families = append(families, mf)
	}
	upload.SortFamilies(families)
	return families, nil
}

type famBuilder struct {
	byName map[string]*dto.MetricFamily
	seen   map[uint64][]*dto.Metric // series hash → metrics with that hash
	seed   maphash.Seed
	sorted []Label // scratch for unsorted label sets
	// Backing arrays: each series takes a window of them, capped so that a
	// later append (validation adds labels) cannot run into a neighbour.
	strs   []string
	pairs  []dto.LabelPair // filled up to nPairs
	nPairs int
	ptrs   []*dto.LabelPair
}

func (b *famBuilder) add(ts *Series) error {
	if len(ts.Samples) == 0 {
		return nil
	}
	ls := ts.Labels
	if !slices.IsSortedFunc(ls, compareLabel) {
		b.sorted = append(b.sorted[:0], ls...)
		slices.SortFunc(b.sorted, compareLabel)
		ls = b.sorted
	}
	name, err := checkLabels(ls)
	if err != nil {
		return err
	}
	newest := ts.Samples[0]
	for _, s := range ts.Samples[1:] {
		if s.Timestamp >= newest.Timestamp {
			newest = s
		}
	}

	h := b.hash(ls)
	for _, m := range b.seen[h] {
		if sameLabels(m, name, ls, b.byName[name]) {
			if newest.Timestamp >= m.GetTimestampMs() {
				m.Untyped.Value = &newest.Value
				m.TimestampMs = &newest.Timestamp
			}
			return nil
		}
	}

	mf := b.byName[name]
	if mf == nil {
		mf = &dto.MetricFamily{Name: &name, Type: dto.MetricType_UNTYPED.Enum()}
		b.byName[name] = mf
	}
	start := len(b.ptrs)
	for _, l := range ls {
		if l.Name == model.MetricNameLabel || l.Value == "" {
			continue
		}
		b.strs = append(b.strs, l.Name, l.Value)
		n := len(b.strs)
		lp := &b.pairs[b.nPairs]
		b.nPairs++
		lp.Name, lp.Value = &b.strs[n-2], &b.strs[n-1]
		b.ptrs = append(b.ptrs, lp)
	}
	v, t := newest.Value, newest.Timestamp
	m := &dto.Metric{
		Label:       b.ptrs[start:len(b.ptrs):len(b.ptrs)],
		Untyped:     &dto.Untyped{Value: &v},
		TimestampMs: &t,
	}
	mf.Metric = append(mf.Metric, m)
	b.seen[h] = append(b.seen[h], m)
	return nil
}

// hash identifies a label set; sameLabels settles collisions.
func (b *famBuilder) hash(ls []Label) uint64 {
	var h maphash.Hash
	h.SetSeed(b.seed)
	for _, l := range ls {
		if l.Value == "" {
			continue
		}
		h.WriteString(l.Name)
		h.WriteByte(model.SeparatorByte)
		h.WriteString(l.Value)
		h.WriteByte(model.SeparatorByte)
	}
	return h.Sum64()
}

// sameLabels reports whether m, a metric of family mf, has the label set ls
// (which names the metric name).
func sameLabels(m *dto.Metric, name string, ls []Label, mf *dto.MetricFamily) bool {
	if mf.GetName() != name {
		return false
	}
	i := 0
	for _, l := range ls {
		if l.Name == model.MetricNameLabel || l.Value == "" {
			continue
		}
		if i >= len(m.Label) || m.Label[i].GetName() != l.Name || m.Label[i].GetValue() != l.Value {
			return false
		}
		i++
	}
	return i == len(m.Label)
}

func compareLabel(a, b Label) int {
	return strings.Compare(a.Name, b.Name)
}

// checkLabels checks a sorted label set and returns its metric name.
func checkLabels(ls []Label) (string, error) {
	name := ""
	for i, l := range ls {
		if i > 0 && ls[i-1].Name == l.Name {
			return "", upload.Errorf(upload.ErrInvalid, "duplicate label %s", truncate(l.Name))
		}
		if l.Name == model.MetricNameLabel {
			name = l.Value
			continue
		}
		if !model.LegacyValidation.IsValidLabelName(l.Name) || strings.HasPrefix(l.Name, "__") {
			return "", upload.Errorf(upload.ErrInvalid, "invalid label name %q", truncate(l.Name))
		}
		if !utf8.ValidString(l.Value) {
			return "", upload.Errorf(upload.ErrInvalid, "value of label %s is not valid UTF-8", l.Name)
		}
	}
	if name == "" {
		return "", upload.Errorf(upload.ErrInvalid, "series without a metric name")
	}
	if !model.LegacyValidation.IsValidMetricName(name) {
		return "", upload.Errorf(upload.ErrInvalid, "invalid metric name %q", truncate(name))
	}
	return name, nil
}

// compareMetrics orders metrics by their (sorted) labels.
func compareMetrics(a, b *dto.Metric) int {
	for i := 0; i < len(a.Label) && i < len(b.Label); i++ {
		if c := strings.Compare(a.Label[i].GetName(), b.Label[i].GetName()); c != 0 {
			return c
		}
		if c := strings.Compare(a.Label[i].GetValue(), b.Label[i].GetValue()); c != 0 {
			return c
		}
	}
	return len(a.Label) - len(b.Label)
}

// IsStale reports whether m's value is a Prometheus staleness marker.
func IsStale(m *dto.Metric) bool {
	v := m.GetUntyped().GetValue()
	return math.IsNaN(v) && value.IsStaleNaN(v)
}

// Merge folds incoming, the families of one remote-write request, into
// stored, the cluster's current snapshot, and returns the new snapshot. A
// remote-write request carries only some of a sender's series, so it must
// not replace the snapshot: a series in incoming replaces the same series in
// stored, a staleness marker removes it, and a stored series whose timestamp
// is older than cutoffMs (the sender stopped sending it) is dropped. A stored
// series without a timestamp is kept. A family whose type differs between
// the two is taken from incoming alone.
//
// Both inputs must have sorted labels (ToFamilies and the store provide
// them). Merge does not modify its inputs' slices but shares their metrics.
// The result is sorted by family name and by labels.
func Merge(stored, incoming []*dto.MetricFamily, cutoffMs int64) []*dto.MetricFamily {
	in := make(map[string]*dto.MetricFamily, len(incoming))
	for _, mf := range incoming {
		in[mf.GetName()] = mf
	}
	out := make([]*dto.MetricFamily, 0, len(stored)+len(incoming))
	var key []byte
	for _, old := range stored {
		nf := in[old.GetName()]
		if nf != nil && nf.GetType() != old.GetType() {
			continue // replaced whole below
		}
		delete(in, old.GetName())
		var news map[string]*dto.Metric
		if nf != nil {
			news = make(map[string]*dto.Metric, len(nf.Metric))
			for _, m := range nf.Metric {
				key = labelKey(key[:0], m)
				news[string(key)] = m
			}
		}
		merged := &dto.MetricFamily{Name: old.Name, Help: old.Help, Type: old.Type, Unit: old.Unit}
		for _, m := range old.Metric {
			key = labelKey(key[:0], m)
			if _, ok := news[string(key)]; ok {
				continue
			}
			if m.TimestampMs != nil && m.GetTimestampMs() < cutoffMs {
				continue
			}
			merged.Metric = append(merged.Metric, m)
		}
		if nf != nil {
			for _, m := range nf.Metric {
				if !IsStale(m) {
					merged.Metric = append(merged.Metric, m)
				}
			}
			slices.SortFunc(merged.Metric, compareMetrics)
		}
		if len(merged.Metric) > 0 {
			out = append(out, merged)
		}
	}
	for _, nf := range incoming {
		if in[nf.GetName()] != nf {
			continue // merged above
		}
		fresh := &dto.MetricFamily{Name: nf.Name, Help: nf.Help, Type: nf.Type, Unit: nf.Unit}
		for _, m := range nf.Metric {
			if !IsStale(m) {
				fresh.Metric = append(fresh.Metric, m)
			}
		}
		if len(fresh.Metric) > 0 {
			out = append(out, fresh)
		}
	}
	upload.SortFamilies(out)
	return out
}

func labelKey(b []byte, m *dto.Metric) []byte {
	for _, lp := range m.Label {
		b = append(b, lp.GetName()...)
		b = append(b, model.SeparatorByte)
		b = append(b, lp.GetValue()...)
		b = append(b, model.SeparatorByte)
	}
	return b
}
