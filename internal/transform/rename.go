package transform

import (
	"maps"

	dto "github.com/prometheus/client_model/go"
)

// Rename renames metric families: names maps an old family name to its new
// one, for example ALERTS to alerts. Names come from ParseRenames, which
// checks them. Renames are not chained: with a=b and b=c, a becomes b.
func Rename(names map[string]string) Transformer {
	names = maps.Clone(names)
	return Func(func(mf *dto.MetricFamily) (bool, error) {
		if to, ok := names[mf.GetName()]; ok {
			mf.Name = &to
		}
		return true, nil
	})
}
