package transform

import (
	dto "github.com/prometheus/client_model/go"
)

// Builders for families that the text format cannot express: nil entries,
// values of the wrong type, label names no parser would accept.

func pair(name, value string) *dto.LabelPair { return &dto.LabelPair{Name: &name, Value: &value} }

func pairs(kv ...string) []*dto.LabelPair {
	out := make([]*dto.LabelPair, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, pair(kv[i], kv[i+1]))
	}
	return out
}

func gaugeMetric(v float64, kv ...string) *dto.Metric {
	return &dto.Metric{Label: pairs(kv...), Gauge: &dto.Gauge{Value: &v}}
}

func counterMetric(v float64, kv ...string) *dto.Metric {
	return &dto.Metric{Label: pairs(kv...), Counter: &dto.Counter{Value: &v}}
}

func family(name string, typ dto.MetricType, ms ...*dto.Metric) *dto.MetricFamily {
	return &dto.MetricFamily{Name: &name, Type: &typ, Metric: ms}
}

func withTimestamp(m *dto.Metric, ms int64) *dto.Metric {
	m.TimestampMs = &ms
	return m
}
