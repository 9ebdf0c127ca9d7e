package main

import (
	"bufio"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// median of xs; NaN for none. Values that are NaN are left out.
func median(xs []float64) float64 {
	s := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// benchResult is one line of `go test -bench` output.
type benchResult struct {
	pkg  string
	name string // without the -GOMAXPROCS suffix
	// metrics by unit: ns/op, B/op, allocs/op and any custom ones.
	metrics map[string]float64
}

// parseBenchOutput reads `go test -bench` output: "pkg:" lines name the
// package of the lines that follow, "Benchmark..." lines are results.
func parseBenchOutput(r io.Reader) []benchResult {
	var out []benchResult
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		// name, iterations, then value-unit pairs.
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		res := benchResult{pkg: pkg, name: name, metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			res.metrics[f[i+1]] = v
		}
		out = append(out, res)
	}
	return out
}

// benchSummary is the medians of the runs of one benchmark.
type benchSummary struct {
	pkg, name string
	runs      int
	medians   map[string]float64
	units     []string // ns/op, B/op, allocs/op, then custom units by name
}

// summarize groups results by package and name, in order of appearance,
// and takes the median of every unit.
func summarize(results []benchResult) []benchSummary {
	var out []benchSummary
	index := map[string]int{}
	values := map[string]map[string][]float64{}
	for _, r := range results {
		key := r.pkg + " " + r.name
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, benchSummary{pkg: r.pkg, name: r.name, medians: map[string]float64{}})
			values[key] = map[string][]float64{}
		}
		out[i].runs++
		for unit, v := range r.metrics {
			if _, seen := values[key][unit]; !seen {
				out[i].units = append(out[i].units, unit)
			}
			values[key][unit] = append(values[key][unit], v)
		}
	}
	for i := range out {
		key := out[i].pkg + " " + out[i].name
		for unit, vs := range values[key] {
			out[i].medians[unit] = median(vs)
		}
		slices.SortFunc(out[i].units, func(a, b string) int {
			if d := unitRank(a) - unitRank(b); d != 0 {
				return d
			}
			return strings.Compare(a, b)
		})
	}
	return out
}

// unitRank puts the standard units first, in this order.
func unitRank(u string) int {
	switch u {
	case "ns/op":
		return 0
	case "B/op":
		return 1
	case "allocs/op":
		return 2
	}
	return 3
}
