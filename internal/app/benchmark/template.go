package benchmark

import (
	"bytes"
	_ "embed" // the T232 default payload
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/telemeter/telemeter/internal/upload"
)

// t232 is the default template: one real cluster's upload of 232 series
// (the T232 reference payload of the project's performance targets).
//
//go:embed t232.txt
var t232 []byte

// ReplicaLabel is the label --series-multiplier adds to tell copies apart.
const ReplicaLabel = "replica"

// kind is how the values of a series evolve from push to push.
type kind uint8

const (
	kindCounter   kind = iota // only increases
	kindGauge                 // random walk
	kindConstant              // NaN or ±Inf in the template: sent as is
	kindHistogram             // count, sum and cumulative buckets only increase
	kindSummary               // count and sum increase, quantiles walk in order
)

// Fields of io.prometheus.client.Metric and its value messages.
const (
	fieldLabel     protowire.Number = 1
	fieldGauge     protowire.Number = 2
	fieldCounter   protowire.Number = 3
	fieldSummary   protowire.Number = 4
	fieldUntyped   protowire.Number = 5
	fieldTimestamp protowire.Number = 6
	fieldHistogram protowire.Number = 7
	fieldMetric    protowire.Number = 4 // in MetricFamily
)

// series is one series of the template: its labels encoded once, split
// around the place where the cluster's _id label sorts, and how its values
// live in a cluster's value slots.
type series struct {
	before, after []byte           // encoded LabelPair fields sorting before and after _id
	field         protowire.Number // the Metric field that holds the value
	kind          kind
	slot          int  // first value slot
	integer       bool // counters and gauges that hold whole numbers keep doing so
	scale         float64
	// Histograms: upper bounds of the buckets, and the mean number of new
	// observations per push in each bucket's range, the last entry for the
	// range above the last bound.
	bounds []float64
	rates  []float64
	// Summaries: the quantiles, ascending; rate is new observations per push.
	quantiles []float64
	rate      float64
	mean      float64 // histograms and summaries: typical observed value

	// labels are the series' labels, sorted, without _id: what the peer
	// encodings (remote write, text) are built from.
	labels []*dto.LabelPair
}

// samples is how many Prometheus samples the series stands for.
func (s *series) samples() int {
	switch s.kind {
	case kindHistogram:
		// A bucket per finite bound, the +Inf bucket (sent or not), the
		// count and the sum: the series Prometheus would store.
		n := len(s.bounds) + 3
		if len(s.bounds) > 0 && math.IsInf(s.bounds[len(s.bounds)-1], 1) {
			n--
		}
		return n
	case kindSummary:
		return len(s.quantiles) + 2
	}
	return 1
}

// slots is how many value slots the series uses.
func (s *series) slots() int {
	switch s.kind {
	case kindHistogram:
		return 2 + len(s.bounds)
	case kindSummary:
		return 2 + len(s.quantiles)
	}
	return 1
}

type family struct {
	header []byte // name, help and type fields
	series []series

	name string
	help *string // nil: the template had no HELP line
	typ  dto.MetricType
}

// template is the payload every simulated cluster sends, shared read-only
// by all of them; a cluster only owns its value slots.
type template struct {
	families []family
	initial  []float64 // the template's values, the starting point of every cluster
	series   int
	samples  int
	names    map[string]struct{} // every label name, to spot clashes with /authorize labels
}

// parseTemplate reads a text exposition payload and builds the template,
// each series copied multiplier times with a replica label when multiplier
// is above 1. Timestamps and any _id label in the file are ignored.
func parseTemplate(text []byte, multiplier int) (*template, error) {
	if multiplier < 1 {
		return nil, fmt.Errorf("parse template: multiplier %d is below 1", multiplier)
	}
	size := int64(len(text)) + 1
	families, err := upload.Decode(bytes.NewReader(text), upload.MediaTypeText, "", upload.Limits{
		CompressedBytes: size,
		DecodedBytes:    size,
		Families:        1 << 20,
		Series:          1 << 24,
	})
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	t := &template{names: map[string]struct{}{}}
	for _, mf := range families {
		f, err := t.addFamily(mf, multiplier)
		if err != nil {
			return nil, fmt.Errorf("parse template: %w", err)
		}
		if len(f.series) > 0 {
			t.families = append(t.families, f)
		}
	}
	if t.series == 0 {
		return nil, fmt.Errorf("parse template: no series")
	}
	return t, nil
}

func (t *template) addFamily(mf *dto.MetricFamily, multiplier int) (family, error) {
	f := family{name: mf.GetName(), help: mf.Help, typ: mf.GetType()}
	f.header = protowire.AppendTag(f.header, 1, protowire.BytesType)
	f.header = protowire.AppendString(f.header, mf.GetName())
	if mf.Help != nil {
		f.header = protowire.AppendTag(f.header, 2, protowire.BytesType)
		f.header = protowire.AppendString(f.header, mf.GetHelp())
	}
	f.header = protowire.AppendTag(f.header, 3, protowire.VarintType)
	f.header = protowire.AppendVarint(f.header, uint64(mf.GetType()))

	type copyOf struct {
		m      *dto.Metric
		labels []*dto.LabelPair // sorted, without _id, with the replica label
	}
	var copies []copyOf
	for _, m := range mf.Metric {
		base := make([]*dto.LabelPair, 0, len(m.Label)+1)
		for _, lp := range m.Label {
			if lp.GetName() == upload.IDLabel {
				continue
			}
			if multiplier > 1 && lp.GetName() == ReplicaLabel {
				return f, fmt.Errorf("series of %s already carry a %s label: --series-multiplier cannot add it", mf.GetName(), ReplicaLabel)
			}
			base = append(base, lp)
			t.names[lp.GetName()] = struct{}{}
		}
		for k := range multiplier {
			labels := slices.Clone(base)
			if multiplier > 1 {
				name, value := ReplicaLabel, strconv.Itoa(k)
				labels = append(labels, &dto.LabelPair{Name: &name, Value: &value})
			}
			slices.SortFunc(labels, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
			copies = append(copies, copyOf{m: m, labels: labels})
		}
	}
	if multiplier > 1 {
		t.names[ReplicaLabel] = struct{}{}
	}
	slices.SortStableFunc(copies, func(a, b copyOf) int { return compareLabels(a.labels, b.labels) })

	for _, c := range copies {
		s := series{slot: len(t.initial), labels: c.labels}
		for _, lp := range c.labels {
			if strings.Compare(lp.GetName(), upload.IDLabel) < 0 {
				s.before = appendLabel(s.before, lp.GetName(), lp.GetValue())
			} else {
				s.after = appendLabel(s.after, lp.GetName(), lp.GetValue())
			}
		}
		t.addValues(&s, mf, c.m)
		f.series = append(f.series, s)
		t.series++
		t.samples += s.samples()
	}
	return f, nil
}

// addValues sets how s evolves and appends its starting values.
func (t *template) addValues(s *series, mf *dto.MetricFamily, m *dto.Metric) {
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		s.field = fieldCounter
		t.addScalar(s, kindCounter, m.GetCounter().GetValue())
	case dto.MetricType_GAUGE:
		s.field = fieldGauge
		t.addScalar(s, kindGauge, m.GetGauge().GetValue())
	case dto.MetricType_UNTYPED:
		s.field = fieldUntyped
		k := kindGauge
		if cumulativeName(mf.GetName()) {
			k = kindCounter
		}
		t.addScalar(s, k, m.GetUntyped().GetValue())
	case dto.MetricType_SUMMARY:
		s.field = fieldSummary
		s.kind = kindSummary
		sm := m.GetSummary()
		qs := slices.Clone(sm.GetQuantile())
		slices.SortFunc(qs, func(a, b *dto.Quantile) int { return cmpFloat(a.GetQuantile(), b.GetQuantile()) })
		count := float64(sm.GetSampleCount())
		s.rate = max(1, count/1000)
		s.mean = typicalObservation(sm.GetSampleSum(), count)
		t.initial = append(t.initial, count, sm.GetSampleSum())
		for _, q := range qs {
			s.quantiles = append(s.quantiles, q.GetQuantile())
			t.initial = append(t.initial, q.GetValue())
		}
	case dto.MetricType_HISTOGRAM:
		s.field = fieldHistogram
		s.kind = kindHistogram
		h := m.GetHistogram()
		count := float64(h.GetSampleCount())
		rate := max(1, count/1000)
		s.mean = typicalObservation(h.GetSampleSum(), count)
		t.initial = append(t.initial, count, h.GetSampleSum())
		prev := 0.0
		for _, b := range h.GetBucket() {
			c := float64(b.GetCumulativeCount())
			s.bounds = append(s.bounds, b.GetUpperBound())
			t.initial = append(t.initial, c)
			s.rates = append(s.rates, share(c-prev, count, len(h.GetBucket())+1)*rate)
			prev = c
		}
		over := share(count-prev, count, len(h.GetBucket())+1) * rate
		if n := len(s.bounds); n > 0 && math.IsInf(s.bounds[n-1], 1) {
			over = 0 // the +Inf bucket already holds every observation
		}
		s.rates = append(s.rates, over)
	}
}

func (t *template) addScalar(s *series, k kind, v float64) {
	s.kind = k
	t.initial = append(t.initial, v)
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		s.kind = kindConstant
	case v == math.Trunc(v) && math.Abs(v) < 1<<53:
		s.integer = true
		s.scale = max(1, math.Abs(v)/1000)
	case k == kindCounter:
		s.scale = max(1e-3, math.Abs(v)/1000)
	default:
		s.scale = math.Abs(v) / 100
	}
}

// share is the part of n observations out of total that fall in one of
// ranges, evenly spread when the template has observed nothing.
func share(n, total float64, ranges int) float64 {
	if total <= 0 {
		return 1 / float64(ranges)
	}
	return max(0, n) / total
}

func typicalObservation(sum, count float64) float64 {
	if count > 0 && !math.IsNaN(sum) && !math.IsInf(sum, 0) {
		return sum / count
	}
	return 1
}

// cumulativeName reports whether an untyped series is a counter by the
// naming conventions of Prometheus.
func cumulativeName(name string) bool {
	for _, suffix := range []string{"_total", "_count", "_sum", "_bucket"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

func compareLabels(a, b []*dto.LabelPair) int {
	for i := range min(len(a), len(b)) {
		if c := strings.Compare(a[i].GetName(), b[i].GetName()); c != 0 {
			return c
		}
		if c := strings.Compare(a[i].GetValue(), b[i].GetValue()); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// appendLabel appends one Metric.label field holding the pair name=value.
func appendLabel(b []byte, name, value string) []byte {
	size := protowire.SizeTag(1) + protowire.SizeBytes(len(name)) + protowire.SizeTag(2) + protowire.SizeBytes(len(value))
	b = protowire.AppendTag(b, fieldLabel, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendString(b, value)
}
