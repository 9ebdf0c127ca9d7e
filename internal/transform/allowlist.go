package transform

import (
	"fmt"
	"slices"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// ParseSelectors parses PromQL series selectors such as `{__name__="up"}` or
// `up{job="x"}`, as --match and --whitelist take them. The error names the
// first rule that does not parse. As in PromQL, a selector needs at least one
// matcher that does not match the empty string.
func ParseSelectors(rules []string) ([][]*labels.Matcher, error) {
	p := parser.NewParser(parser.Options{})
	out := make([][]*labels.Matcher, 0, len(rules))
	for i, rule := range rules {
		ms, err := p.ParseMetricSelector(rule)
		if err != nil {
			return nil, fmt.Errorf("parse selector %d %q: %w", i+1, rule, err)
		}
		if !slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return !m.Matches("") }) {
			// PromQL refuses these too: they would select every series.
			return nil, fmt.Errorf("parse selector %d %q: need a matcher that does not match the empty string", i+1, rule)
		}
		out = append(out, ms)
	}
	return out, nil
}

// Allowlist keeps only metrics matched by at least one selector: every
// matcher of the selector must accept the metric, where __name__ is the
// family name and a label the metric lacks has the empty value. With no
// selectors nothing is kept, so leave the transformer out to keep everything.
//
// The family name is the name of the dto family: a histogram family is
// request_seconds, not request_seconds_bucket.
func Allowlist(selectors [][]*labels.Matcher) Transformer {
	a := &allowlist{sels: make([]selector, 0, len(selectors))}
	for _, ms := range selectors {
		var s selector
		for _, m := range ms {
			if m.Name == model.MetricNameLabel {
				s.name = append(s.name, m)
			} else {
				s.labels = append(s.labels, m)
			}
		}
		a.sels = append(a.sels, s)
	}
	return a
}

type allowlist struct{ sels []selector }

// selector is one rule's matchers, split so that the name matchers run once
// per family and only the label matchers run per metric.
type selector struct {
	name, labels []*labels.Matcher
}

func (a *allowlist) Transform(mf *dto.MetricFamily) (bool, error) {
	// Most rules name one family; those that cannot match this family's name
	// play no part in it.
	var buf [8]*selector
	candidates := buf[:0]
	for i := range a.sels {
		s := &a.sels[i]
		if !allMatch(s.name, mf.GetName()) {
			continue
		}
		if len(s.labels) == 0 {
			return true, nil // the name alone selects every metric
		}
		candidates = append(candidates, s)
	}
	if len(candidates) == 0 {
		return false, nil
	}
	for i, m := range mf.Metric {
		if m == nil {
			continue
		}
		keep := false
		for _, s := range candidates {
			if s.matches(m.Label) {
				keep = true
				break
			}
		}
		if !keep {
			mf.Metric[i] = nil
		}
	}
	return true, nil
}

func allMatch(ms []*labels.Matcher, v string) bool {
	for _, m := range ms {
		if !m.Matches(v) {
			return false
		}
	}
	return true
}

func (s *selector) matches(lps []*dto.LabelPair) bool {
	for _, m := range s.labels {
		v := ""
		if lp := findLabel(lps, m.Name); lp != nil {
			v = lp.GetValue()
		}
		if !m.Matches(v) {
			return false
		}
	}
	return true
}
