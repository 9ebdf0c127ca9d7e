package benchmark

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

func TestParseTemplate(t *testing.T) {
	for _, tc := range []struct {
		name       string
		text       string
		multiplier int
		series     int
		samples    int
		families   int
		err        string
	}{
		{name: "T232", text: string(t232), multiplier: 1, series: 232, samples: 232, families: 25},
		{name: "T232 times 43 (W3)", text: string(t232), multiplier: 43, series: 232 * 43, samples: 232 * 43, families: 25},
		{name: "every kind", text: kindsText, multiplier: 1, series: 12, samples: kindsSamples, families: 10},
		{name: "every kind times 3", text: kindsText, multiplier: 3, series: 36, samples: 3 * kindsSamples, families: 10},
		{name: "replica label already there", text: "a{replica=\"x\"} 1\n", multiplier: 2, err: "already carry a replica label"},
		{name: "replica label kept without a multiplier", text: "a{replica=\"x\"} 1\n", multiplier: 1, series: 1, samples: 1, families: 1},
		{name: "not the text format", text: "a{ 1\n", multiplier: 1, err: "parse template"},
		{name: "nothing", text: "# only a comment\n", multiplier: 1, err: "no series"},
		{name: "multiplier zero", text: "a 1\n", multiplier: 0, err: "multiplier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := parseTemplate([]byte(tc.text), tc.multiplier)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.series, tmpl.series)
			require.Equal(t, tc.samples, tmpl.samples)
			require.Len(t, tmpl.families, tc.families)
			slots := 0
			for _, f := range tmpl.families {
				for _, s := range f.series {
					require.Equal(t, slots, s.slot, "slots are laid out in series order")
					slots += s.slots()
				}
			}
			require.Len(t, tmpl.initial, slots)
		})
	}
}

func TestTemplateKinds(t *testing.T) {
	tmpl, err := parseTemplate([]byte(kindsText), 1)
	require.NoError(t, err)
	kinds := map[string]kind{}
	integer := map[string]bool{}
	for _, f := range tmpl.families {
		name := string(f.header[2 : 2+f.header[1]])
		kinds[name] = f.series[0].kind
		integer[name] = f.series[0].integer
	}
	require.Equal(t, map[string]kind{
		"broken":                    kindConstant,
		"empty_seconds":             kindHistogram,
		"http_requests_total":       kindCounter,
		"memory_bytes":              kindGauge,
		"process_cpu_seconds_total": kindCounter,
		"request_duration_seconds":  kindHistogram,
		"rpc_seconds":               kindSummary,
		"scrapes_total":             kindCounter, // untyped, named like a counter
		"temperature_celsius":       kindGauge,
		"up":                        kindGauge,
	}, kinds)
	require.True(t, integer["http_requests_total"])
	require.True(t, integer["up"])
	require.False(t, integer["process_cpu_seconds_total"])
	require.False(t, integer["temperature_celsius"])
}

// TestEncode checks the hand-made encoding against the protobuf library:
// decoding a body and encoding it again with upload.Encode gives the same
// bytes, and the decoded series are the template's, with the cluster's _id,
// the push's timestamp and the cluster's values.
func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		text       string
		multiplier int
		identity   map[string]string
	}{
		{name: "T232", text: string(t232), multiplier: 1},
		{name: "every kind", text: kindsText, multiplier: 1},
		{name: "every kind times 2", text: kindsText, multiplier: 2},
		{name: "labels from authorize", text: kindsText, multiplier: 1,
			identity: map[string]string{upload.IDLabel: "ignored", "zone": "eu", "account": "a1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := parseTemplate([]byte(tc.text), tc.multiplier)
			require.NoError(t, err)
			c := newCluster("bench-7", tmpl, rand.New(rand.NewPCG(1, 2)))
			if tc.identity != nil {
				require.Empty(t, c.setIdentity(tmpl, tc.identity))
			}
			for range 3 {
				tmpl.evolve(c)
			}
			const ts = int64(1_750_000_000_123)

			var fam, val []byte
			raw := tmpl.appendPayload(nil, c, ts, &fam, &val)
			got, err := upload.Decode(bytes.NewReader(raw), upload.MediaTypeProtoDelim, "", upload.Limits{})
			require.NoError(t, err)
			var again bytes.Buffer
			require.NoError(t, upload.Encode(&again, got))
			require.Equal(t, again.Bytes(), raw, "the encoding is the protobuf library's")

			body, err := newEncoder().encode(tmpl, c, ts)
			require.NoError(t, err)
			fromBody, err := upload.Decode(bytes.NewReader(body), upload.MediaTypeProtoDelim, upload.EncodingSnappy, upload.Limits{})
			require.NoError(t, err)
			again.Reset()
			require.NoError(t, upload.Encode(&again, fromBody))
			require.Equal(t, raw, again.Bytes(), "the snappy body holds the same payload")

			// The values, in slot order, are the cluster's.
			var values []float64
			for _, mf := range got {
				for _, m := range mf.Metric {
					values = append(values, sampleValues(mf, m)...)
					require.Equal(t, ts, m.GetTimestampMs())
					id, ok := labelValue(m, upload.IDLabel)
					require.True(t, ok)
					require.Equal(t, "bench-7", id)
					for name, value := range tc.identity {
						if name != upload.IDLabel {
							v, ok := labelValue(m, name)
							require.True(t, ok && v == value, "label %s from authorize", name)
						}
					}
				}
			}
			require.Len(t, values, len(c.values))
			for i := range values {
				if math.IsNaN(c.values[i]) {
					require.True(t, math.IsNaN(values[i]))
					continue
				}
				want := c.values[i]
				require.Equal(t, want, values[i], "slot %d", i)
			}

			// The series are the template's, each multiplier times.
			want, err := upload.Decode(strings.NewReader(tc.text), upload.MediaTypeText, "", upload.Limits{DecodedBytes: 1 << 20, CompressedBytes: 1 << 20})
			require.NoError(t, err)
			wantKeys := map[string]int{}
			for _, mf := range want {
				for _, m := range mf.Metric {
					m.Label = slices.DeleteFunc(m.Label, func(lp *dto.LabelPair) bool { return lp.GetName() == upload.IDLabel })
					slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
					for k := range tc.multiplier {
						key := seriesKey(mf, m)
						if tc.multiplier > 1 {
							key = replicaKey(mf, m, k)
						}
						wantKeys[key]++
					}
				}
			}
			gotKeys := map[string]int{}
			for _, mf := range got {
				for _, m := range mf.Metric {
					var lps []*dto.LabelPair
					for _, lp := range m.Label {
						if _, fromAuth := tc.identity[lp.GetName()]; !fromAuth || lp.GetName() == upload.IDLabel {
							lps = append(lps, lp)
						}
					}
					gotKeys[seriesKey(mf, &dto.Metric{Label: lps})]++
				}
			}
			require.Equal(t, wantKeys, gotKeys)
		})
	}
}

// replicaKey is seriesKey of m with the replica label k, in label order.
func replicaKey(mf *dto.MetricFamily, m *dto.Metric, k int) string {
	name, value := ReplicaLabel, strconv.Itoa(k)
	lps := append(slices.Clone(m.Label), &dto.LabelPair{Name: &name, Value: &value})
	slices.SortFunc(lps, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	return seriesKey(mf, &dto.Metric{Label: lps})
}

func TestSetIdentityReportsClashes(t *testing.T) {
	tmpl, err := parseTemplate([]byte(kindsText), 1)
	require.NoError(t, err)
	c := newCluster("x", tmpl, rand.New(rand.NewPCG(1, 1)))
	require.Equal(t, []string{"job", "pod"}, c.setIdentity(tmpl, map[string]string{"pod": "p", "job": "j", "zone": "z", upload.IDLabel: "x"}))
}

// TestEvolve checks that values evolve like real series over many pushes.
func TestEvolve(t *testing.T) {
	tmpl, err := parseTemplate([]byte(kindsText), 1)
	require.NoError(t, err)
	c := newCluster("c", tmpl, rand.New(rand.NewPCG(7, 7)))
	increased := map[kind]int{}
	changed := 0
	for push := range 500 {
		prev := slices.Clone(c.values)
		tmpl.evolve(c)
		for _, f := range tmpl.families {
			for _, s := range f.series {
				before, now := prev[s.slot:s.slot+s.slots()], c.values[s.slot:s.slot+s.slots()]
				switch s.kind {
				case kindCounter:
					require.GreaterOrEqual(t, now[0], before[0], "push %d: a counter went down", push)
					if now[0] > before[0] {
						increased[kindCounter]++
					}
					if s.integer {
						require.Equal(t, math.Trunc(now[0]), now[0])
					}
				case kindGauge:
					if now[0] != before[0] {
						changed++
					}
					if tmpl.initial[s.slot] >= 0 {
						require.GreaterOrEqual(t, now[0], 0.0, "push %d: a non-negative gauge went below zero", push)
					}
					if s.integer {
						require.Equal(t, math.Trunc(now[0]), now[0])
					}
				case kindConstant:
					require.True(t, math.IsNaN(now[0]))
				case kindHistogram:
					for i := range now {
						require.GreaterOrEqual(t, now[i], before[i], "push %d: histogram slot %d went down", push, i)
					}
					buckets := now[2:]
					for i := 1; i < len(buckets); i++ {
						require.GreaterOrEqual(t, buckets[i], buckets[i-1], "push %d: buckets not cumulative", push)
					}
					require.Equal(t, now[0], buckets[len(buckets)-1], "push %d: the +Inf bucket is the count", push)
					if now[0] > before[0] {
						increased[kindHistogram]++
					}
				case kindSummary:
					require.GreaterOrEqual(t, now[0], before[0])
					require.GreaterOrEqual(t, now[1], before[1], "observations are positive, the sum grows")
					require.True(t, slices.IsSorted(now[2:]), "push %d: quantile values out of order: %v", push, now[2:])
					if now[0] > before[0] {
						increased[kindSummary]++
					}
				}
			}
		}
	}
	require.Greater(t, increased[kindCounter], 500, "counters increase on most pushes")
	require.Greater(t, increased[kindHistogram], 250)
	require.Greater(t, increased[kindSummary], 250)
	require.Greater(t, changed, 500, "gauges walk")
}

// BenchmarkPushT232 measures what one push of T232 costs the generator:
// evolving the values, encoding and compressing the body.
func BenchmarkPushT232(b *testing.B) {
	tmpl, err := parseTemplate(t232, 1)
	require.NoError(b, err)
	c := newCluster("bench-0", tmpl, rand.New(rand.NewPCG(1, 1)))
	enc := newEncoder()
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		tmpl.evolve(c)
		if _, err := enc.encode(tmpl, c, 1_750_000_000_000); err != nil {
			b.Fatal(err)
		}
	}
	// CPU time, not wall time: the generator's cost on a shared machine.
	spent := (cpuTime() - cpu).Seconds()
	b.ReportMetric(spent*1e6/float64(b.N), "cpu-µs/push")
	if spent > 0 {
		b.ReportMetric(float64(b.N*tmpl.samples)/spent, "samples/cpu-s")
	}
}
