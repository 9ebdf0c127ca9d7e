package transform

import (
	"maps"
	"slices"

	dto "github.com/prometheus/client_model/go"

	"github.com/telemeter/telemeter/internal/upload"
)

// AddLabels sets each label of set on every metric, overwriting a value that
// is already there. Names and values come from ParseLabels, which checks them.
func AddLabels(set map[string]string) Transformer {
	return newLabelSetter(set, false)
}

// RequireLabels makes every metric carry each label of set: a missing label
// (or one with an empty value, which Prometheus treats as missing) is added,
// and a label that is present with another value fails the family with an
// error wrapping upload.ErrForbidden, before anything in it is changed. The
// client uses it for the labels /authorize returns, so that a local series can
// never claim another cluster's _id.
func RequireLabels(set map[string]string) Transformer {
	return newLabelSetter(set, true)
}

// labelSetter implements AddLabels and RequireLabels. Rather than allocating
// several objects per metric, it counts what a family needs first and then
// takes label pairs, value strings and grown label slices from one slab each.
// Every pair still gets its own Name and Value pointers, so no two metrics
// share mutable state. Each pass reads a metric's labels once.
type labelSetter struct {
	names, values []string // sorted by name
	require       bool
}

func newLabelSetter(set map[string]string, require bool) *labelSetter {
	s := &labelSetter{require: require}
	for _, name := range slices.Sorted(maps.Keys(set)) {
		s.names = append(s.names, name)
		s.values = append(s.values, set[name])
	}
	return s
}

func (s *labelSetter) Transform(mf *dto.MetricFamily) (bool, error) {
	if len(s.names) == 0 {
		return true, nil
	}
	var stack [8]*dto.LabelPair
	found := stack[:0]
	if len(s.names) > len(stack) {
		found = make([]*dto.LabelPair, 0, len(s.names))
	}
	found = found[:len(s.names)]

	// First pass: refuse conflicts and count. A missing label needs a pair and
	// two strings (name and value); a differing value needs one string.
	var pairs, strs, grown int
	for _, m := range mf.Metric {
		if m == nil {
			continue
		}
		missing := s.find(m.Label, found)
		for i, lp := range found {
			switch {
			case lp == nil, lp.GetValue() == s.values[i]:
			case s.require && lp.GetValue() != "":
				return false, upload.Errorf(upload.ErrForbidden, "label %s is %q, want %q", s.names[i], lp.GetValue(), s.values[i])
			default:
				strs++
			}
		}
		pairs += missing
		strs += 2 * missing
		if missing > cap(m.Label)-len(m.Label) {
			grown += len(m.Label) + missing
		}
	}
	if pairs == 0 && strs == 0 {
		return true, nil
	}

	pairSlab := make([]dto.LabelPair, pairs)
	strSlab := make([]string, strs)
	var labelSlab []*dto.LabelPair
	if grown > 0 {
		labelSlab = make([]*dto.LabelPair, grown)
	}
	newString := func(v string) *string {
		strSlab[0] = v
		p := &strSlab[0]
		strSlab = strSlab[1:]
		return p
	}
	for _, m := range mf.Metric {
		if m == nil {
			continue
		}
		missing := s.find(m.Label, found)
		if n := len(m.Label); missing > cap(m.Label)-n {
			grownLabels := labelSlab[: n : n+missing]
			copy(grownLabels, m.Label)
			labelSlab = labelSlab[n+missing:]
			m.Label = grownLabels
		}
		for i, lp := range found {
			switch {
			case lp == nil:
				lp = &pairSlab[0]
				pairSlab = pairSlab[1:]
				lp.Name = newString(s.names[i])
				lp.Value = newString(s.values[i])
				m.Label = append(m.Label, lp)
			case lp.GetValue() != s.values[i]:
				lp.Value = newString(s.values[i])
			}
		}
	}
	return true, nil
}

// find sets found[i] to the pair named s.names[i], or nil, and returns how
// many are missing.
func (s *labelSetter) find(lps []*dto.LabelPair, found []*dto.LabelPair) int {
	clear(found)
	for _, lp := range lps {
		if lp == nil {
			continue
		}
		if i, ok := slices.BinarySearch(s.names, lp.GetName()); ok && found[i] == nil {
			found[i] = lp
		}
	}
	missing := 0
	for _, lp := range found {
		if lp == nil {
			missing++
		}
	}
	return missing
}

func findLabel(lps []*dto.LabelPair, name string) *dto.LabelPair {
	for _, lp := range lps {
		if lp != nil && lp.GetName() == name {
			return lp
		}
	}
	return nil
}

// Elide removes the named labels from every metric.
func Elide(labelNames ...string) Transformer {
	names := slices.Clone(labelNames)
	return Func(func(mf *dto.MetricFamily) (bool, error) {
		if len(names) == 0 {
			return true, nil
		}
		for _, m := range mf.Metric {
			if m == nil {
				continue
			}
			m.Label = slices.DeleteFunc(m.Label, func(lp *dto.LabelPair) bool {
				return lp != nil && slices.Contains(names, lp.GetName())
			})
		}
		return true, nil
	})
}
