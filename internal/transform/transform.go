package transform

import (
	"fmt"
	"slices"

	dto "github.com/prometheus/client_model/go"
)

// Transformer rewrites one family in place. keep=false drops the whole family.
// mf is never nil; entries of mf.Metric and of a metric's Label may be nil and
// must be skipped.
type Transformer interface {
	Transform(mf *dto.MetricFamily) (keep bool, err error)
}

// Func adapts a function to a Transformer.
type Func func(mf *dto.MetricFamily) (bool, error)

// Transform calls f.
func (f Func) Transform(mf *dto.MetricFamily) (bool, error) { return f(mf) }

// Chain runs transformers in order. A family that one of them drops is not
// shown to the rest.
type Chain []Transformer

// Transform runs every transformer of c over mf, stopping at the first that
// drops the family or fails. It makes a Chain usable inside another Chain.
func (c Chain) Transform(mf *dto.MetricFamily) (bool, error) {
	if mf == nil {
		return false, nil
	}
	for _, t := range c {
		keep, err := t.Transform(mf)
		if err != nil || !keep {
			return false, err
		}
	}
	return true, nil
}

// Apply runs every transformer over every family in order, then packs the
// result (Pack). It returns the kept families; an error from any step stops it.
//
// Apply reuses the backing array of families and rewrites the families in
// place. After an error they are partly transformed and must be discarded.
func (c Chain) Apply(families []*dto.MetricFamily) ([]*dto.MetricFamily, error) {
	for i, mf := range families {
		if mf == nil {
			continue
		}
		keep, err := c.Transform(mf)
		if err != nil {
			return nil, fmt.Errorf("transform %s: %w", mf.GetName(), err)
		}
		if !keep {
			families[i] = nil
		}
	}
	return Pack(families), nil
}

// Pack removes nil families, nil metrics and families left without metrics.
// It works in place: the result shares the backing array of families, and
// each family's Metric slice keeps its backing array. Dropped entries are
// cleared so the garbage collector can reclaim them.
func Pack(families []*dto.MetricFamily) []*dto.MetricFamily {
	return slices.DeleteFunc(families, func(mf *dto.MetricFamily) bool {
		if mf == nil {
			return true
		}
		mf.Metric = slices.DeleteFunc(mf.Metric, func(m *dto.Metric) bool { return m == nil })
		return len(mf.Metric) == 0
	})
}
