package transform

import (
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// Sort orders the labels of each metric by name, then the metrics of the
// family by label set: pair by pair, comparing names and then values, with a
// set that is a prefix of another first. Metrics with equal label sets keep
// their order; nil metrics go last.
func Sort() Transformer {
	return Func(sortFamily)
}

func sortFamily(mf *dto.MetricFamily) (bool, error) {
	for _, m := range mf.Metric {
		if m != nil {
			slices.SortFunc(m.Label, compareLabelPairs)
		}
	}
	slices.SortStableFunc(mf.Metric, compareMetrics)
	return true, nil
}

func compareLabelPairs(a, b *dto.LabelPair) int {
	return strings.Compare(a.GetName(), b.GetName())
}

func compareMetrics(a, b *dto.Metric) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	la, lb := a.Label, b.Label
	for i := range min(len(la), len(lb)) {
		if c := strings.Compare(la[i].GetName(), lb[i].GetName()); c != 0 {
			return c
		}
		if c := strings.Compare(la[i].GetValue(), lb[i].GetValue()); c != 0 {
			return c
		}
	}
	return len(la) - len(lb)
}
