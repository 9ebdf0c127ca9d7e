package transform

import (
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
)

// DropInvalid drops what the server would refuse or Prometheus would
// misread:
//
//   - metrics whose value does not match the family type (a counter family
//     whose metric carries a gauge, or carries no value or several);
//   - samples whose timestamp is older than now()-maxAge (maxAge 0 turns the
//     age check off), and samples whose timestamp is set explicitly to zero or
//     less; samples without a timestamp are kept;
//   - metrics with a nil label pair, an invalid or reserved ("__") label
//     name, a label value that is not UTF-8, or a label name given twice;
//   - whole families with an invalid metric name.
//
// One such series would otherwise make the server refuse the whole push with
// a 400 that is never retried. A nil now means time.Now.
func DropInvalid(now func() time.Time, maxAge time.Duration) Transformer {
	if now == nil {
		now = time.Now
	}
	return &dropInvalid{now: now, maxAge: maxAge}
}

type dropInvalid struct {
	now    func() time.Time
	maxAge time.Duration
}

func (d *dropInvalid) Transform(mf *dto.MetricFamily) (bool, error) {
	if !validMetricName(mf.GetName()) {
		return false, nil
	}
	oldest := int64(math.MinInt64)
	if d.maxAge > 0 {
		oldest = d.now().Add(-d.maxAge).UnixMilli()
	}
	typ := mf.GetType()
	for i, m := range mf.Metric {
		if m == nil {
			continue
		}
		if !valueMatches(typ, m) || !timestampValid(m, oldest) || !labelsValid(m.Label) {
			mf.Metric[i] = nil
		}
	}
	return true, nil
}

// valueMatches reports whether m carries exactly one value and it is the one
// that type t calls for. Unknown types match nothing.
func valueMatches(t dto.MetricType, m *dto.Metric) bool {
	set := 0
	for _, present := range [...]bool{m.Counter != nil, m.Gauge != nil, m.Untyped != nil, m.Summary != nil, m.Histogram != nil} {
		if present {
			set++
		}
	}
	if set != 1 {
		return false
	}
	switch t {
	case dto.MetricType_COUNTER:
		return m.Counter != nil
	case dto.MetricType_GAUGE:
		return m.Gauge != nil
	case dto.MetricType_UNTYPED:
		return m.Untyped != nil
	case dto.MetricType_SUMMARY:
		return m.Summary != nil
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return m.Histogram != nil
	}
	return false
}

func timestampValid(m *dto.Metric, oldest int64) bool {
	if m.TimestampMs == nil {
		return true
	}
	ts := *m.TimestampMs
	return ts > 0 && ts >= oldest
}

// labelsValid checks names and values and looks for a repeated name. The
// names seen so far are kept in a small array, so the check for repeats does
// not chase every earlier pair's pointers again.
func labelsValid(lps []*dto.LabelPair) bool {
	var seen [16]string
	for i, lp := range lps {
		if lp == nil {
			return false
		}
		name := lp.GetName()
		if !validLabelName(name) || strings.HasPrefix(name, "__") || !utf8.ValidString(lp.GetValue()) {
			return false
		}
		if i < len(seen) {
			if slices.Contains(seen[:i], name) {
				return false
			}
			seen[i] = name
			continue
		}
		for _, prev := range lps[:i] {
			if prev.GetName() == name {
				return false
			}
		}
	}
	return true
}
