package remotewrite

import (
	"math"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// ToTimeSeries converts families into the series a Prometheus scraping them
// would ingest, each with one sample stamped timestampMs:
//
//   - counter, gauge, untyped: one series named after the family;
//   - summary: name_count, name_sum and name{quantile="q"} per quantile;
//   - histogram and gauge histogram: name_count, name_sum and
//     name_bucket{le="b"} per classic bucket, with a +Inf bucket (the sample
//     count) added when the exposition has none. Native-histogram data is
//     not sent.
//
// Quantile and le values are formatted as Prometheus 3 normalizes them
// ("1.0", "0.25", "+Inf"). Labels with an empty value are left out (Prometheus
// treats them as absent), every series carries __name__, and labels are
// sorted by name. A metric whose value field does not match its family's type
// is skipped. The returned series share a few backing arrays; treat them as
// read-only.
func ToTimeSeries(families []*dto.MetricFamily, timestampMs int64) []prompb.TimeSeries {
	var c converter
	return c.convert(families, timestampMs)
}

// convert is ToTimeSeries reusing c's arrays: the series it returns are
// valid until the next call.
func (c *converter) convert(families []*dto.MetricFamily, timestampMs int64) []prompb.TimeSeries {
	nSeries, nLabels := 0, 0
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			n, magic := seriesOf(mf.GetType(), m)
			if n == 0 {
				continue
			}
			nSeries += n
			nLabels += n*(1+countLabels(m)) + magic
		}
	}
	if nSeries == 0 {
		return nil
	}
	c.out = grow(c.out, nSeries)
	c.labels = grow(c.labels, nLabels)
	c.samples = grow(c.samples, nSeries)[:nSeries]
	c.ts = timestampMs
	for _, mf := range families {
		c.family(mf)
	}
	return c.out
}

// grow returns s emptied, with room for n elements; its old contents are
// cleared so that they pin no strings.
func grow[E any](s []E, n int) []E {
	if cap(s) < n {
		return make([]E, 0, n)
	}
	clear(s[:cap(s)])
	return s[:0]
}

// seriesOf returns how many series a metric of type t becomes and how many
// of them carry a quantile or le label; 0 if the metric has no value of t.
func seriesOf(t dto.MetricType, m *dto.Metric) (series, magic int) {
	switch t {
	case dto.MetricType_COUNTER:
		if m.Counter != nil {
			return 1, 0
		}
	case dto.MetricType_GAUGE:
		if m.Gauge != nil {
			return 1, 0
		}
	case dto.MetricType_UNTYPED:
		if m.Untyped != nil {
			return 1, 0
		}
	case dto.MetricType_SUMMARY:
		if m.Summary != nil {
			q := len(m.Summary.GetQuantile())
			return 2 + q, q
		}
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		if m.Histogram != nil {
			b := classicBuckets(m.Histogram)
			if !endsWithInf(m.Histogram.GetBucket()[:b]) {
				b++
			}
			return 2 + b, b
		}
	}
	return 0, 0
}

// classicBuckets is how many buckets, from the first, Prometheus reads: up to
// and including the first +Inf bucket.
func classicBuckets(h *dto.Histogram) int {
	for i, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), +1) {
			return i + 1
		}
	}
	return len(h.GetBucket())
}

func endsWithInf(bb []*dto.Bucket) bool {
	return len(bb) > 0 && math.IsInf(bb[len(bb)-1].GetUpperBound(), +1)
}

func countLabels(m *dto.Metric) int {
	n := 0
	for _, lp := range m.GetLabel() {
		if keepLabel(lp) {
			n++
		}
	}
	return n
}

func keepLabel(lp *dto.LabelPair) bool {
	return lp.GetValue() != "" && lp.GetName() != model.MetricNameLabel
}

type converter struct {
	out     []prompb.TimeSeries
	labels  []prompb.Label
	samples []prompb.Sample
	ts      int64
}

func (c *converter) family(mf *dto.MetricFamily) {
	name := mf.GetName()
	t := mf.GetType()
	var countName, sumName, bucketName string
	switch t {
	case dto.MetricType_SUMMARY, dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		countName, sumName, bucketName = name+"_count", name+"_sum", name+"_bucket"
	}
	for _, m := range mf.GetMetric() {
		if n, _ := seriesOf(t, m); n == 0 {
			continue
		}
		switch t {
		case dto.MetricType_COUNTER:
			c.add(name, m, "", "", m.Counter.GetValue())
		case dto.MetricType_GAUGE:
			c.add(name, m, "", "", m.Gauge.GetValue())
		case dto.MetricType_UNTYPED:
			c.add(name, m, "", "", m.Untyped.GetValue())
		case dto.MetricType_SUMMARY:
			s := m.Summary
			c.add(countName, m, "", "", float64(s.GetSampleCount()))
			c.add(sumName, m, "", "", s.GetSampleSum())
			for _, q := range s.GetQuantile() {
				c.add(name, m, model.QuantileLabel, labels.FormatOpenMetricsFloat(q.GetQuantile()), q.GetValue())
			}
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			h := m.Histogram
			count := h.GetSampleCountFloat()
			if count == 0 {
				count = float64(h.GetSampleCount())
			}
			c.add(countName, m, "", "", count)
			c.add(sumName, m, "", "", h.GetSampleSum())
			bb := h.GetBucket()[:classicBuckets(h)]
			for _, b := range bb {
				v := b.GetCumulativeCountFloat()
				if v == 0 {
					v = float64(b.GetCumulativeCount())
				}
				c.add(bucketName, m, model.BucketLabel, labels.FormatOpenMetricsFloat(b.GetUpperBound()), v)
			}
			if !endsWithInf(bb) {
				c.add(bucketName, m, model.BucketLabel, "+Inf", count)
			}
		}
	}
}

// add appends one series: __name__=name, m's labels and, when magicName is
// set, the quantile or le label, sorted by name.
func (c *converter) add(name string, m *dto.Metric, magicName, magicValue string, v float64) {
	start := len(c.labels)
	c.labels = append(c.labels, prompb.Label{Name: model.MetricNameLabel, Value: name})
	for _, lp := range m.GetLabel() {
		if keepLabel(lp) {
			c.labels = append(c.labels, prompb.Label{Name: lp.GetName(), Value: lp.GetValue()})
		}
	}
	if magicName != "" {
		c.labels = append(c.labels, prompb.Label{Name: magicName, Value: magicValue})
	}
	ls := c.labels[start:len(c.labels):len(c.labels)]
	sortLabels(ls)
	i := len(c.out)
	c.samples[i] = prompb.Sample{Value: v, Timestamp: c.ts}
	c.out = append(c.out, prompb.TimeSeries{Labels: ls, Samples: c.samples[i : i+1 : i+1]})
}

// sortLabels is an insertion sort by name: label sets are short and arrive
// nearly sorted (only __name__ and the le or quantile label are out of place).
func sortLabels(ls []prompb.Label) {
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].Name < ls[j-1].Name; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}
