package store

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
	"github.com/telemeter/telemeter/internal/validate"
)

// These tests live with the store because the figure that matters is the
// snapshot file: the verbatim path (validate.Verbatim, then PutEncoded) must
// write the same bytes as decoding, validating and encoding every family.

var verbatimNow = time.Unix(1_700_000_000, 0)

// verbatimOptions gives a few server configurations, picked by one byte.
func verbatimOptions(pick byte) (validate.Options, map[string]string) {
	o := validate.Options{Now: func() time.Time { return verbatimNow }}
	identity := map[string]string{"_id": "c1"}
	if pick&1 != 0 {
		o.Elide = []string{"prometheus_replica", "_id"}
	}
	if pick&2 != 0 {
		o.Labels = map[string]string{"region": "eu"}
	}
	if pick&4 != 0 {
		o.RequiredLabels = []string{"instance"}
	}
	if pick&8 != 0 {
		o.Allow = [][]*labels.Matcher{
			{labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, "cluster:.*|up")},
			{labels.MustNewMatcher(labels.MatchEqual, "job", "a")},
		}
	}
	if pick&16 != 0 {
		o.MaxSeries = 40
	}
	if pick&32 != 0 {
		identity["team"] = "x"
	}
	return o, identity
}

// snapshotBoth stores body both ways and returns the two files, or the two
// errors, and how many families the verbatim path took.
func snapshotBoth(body []byte, pick byte) (decoded, verbatim []byte, taken int, errDecoded, errVerbatim error) {
	o, identity := verbatimOptions(pick)
	l := upload.Limits{Series: 500, Families: 100}
	received := verbatimNow.Add(time.Second)

	v := validate.New(o, nil)
	fams, errDecoded := upload.Decode(bytes.NewReader(body), upload.MediaTypeProtoDelim, "", l)
	if errDecoded == nil {
		var res validate.Result
		if res, errDecoded = v.Validate("c1", identity, fams); errDecoded == nil {
			decoded, _, _, errDecoded = encodeSnapshot(nil, nil, "c1", received, res.Families, nil)
		}
	}

	vt := validate.New(o, nil).Verbatim("c1", identity, l)
	defer vt.Release()
	rest, errVerbatim := upload.DecodeTaking(bytes.NewReader(body), upload.MediaTypeProtoDelim, "", l, vt.Take)
	if errVerbatim == nil {
		var (
			enc []upload.EncodedFamily
			res validate.Result
		)
		if enc, res, errVerbatim = vt.Finish(rest); errVerbatim == nil {
			taken = len(enc)
			verbatim, _, _, errVerbatim = encodeSnapshot(nil, nil, "c1", received, res.Families, enc)
		}
	}
	return decoded, verbatim, taken, errDecoded, errVerbatim
}

func requireSameSnapshot(t *testing.T, body []byte, pick byte) int {
	t.Helper()
	a, b, taken, errA, errB := snapshotBoth(body, pick)
	if errA != nil || errB != nil {
		// Both refuse; with several faults they may name different ones.
		require.Error(t, errA, "only the verbatim path refused: %v", errB)
		require.Error(t, errB, "only the decoding path refused: %v", errA)
		return taken
	}
	require.Equal(t, a, b, "the two paths wrote different snapshots")
	return taken
}

// verbatimBody encodes families as an upload body (no compression).
func verbatimBody(t testing.TB, fams ...*dto.MetricFamily) []byte {
	var buf bytes.Buffer
	require.NoError(t, upload.Encode(&buf, fams))
	return buf.Bytes()
}

func vfam(name string, typ dto.MetricType, metrics ...*dto.Metric) *dto.MetricFamily {
	help := "help of " + name
	return &dto.MetricFamily{Name: &name, Help: &help, Type: &typ, Metric: metrics}
}

// vmetric builds a metric from name, value pairs in the order given.
func vmetric(value float64, ts int64, kv ...string) *dto.Metric {
	m := &dto.Metric{Gauge: &dto.Gauge{Value: &value}}
	if ts != 0 {
		m.TimestampMs = &ts
	}
	for i := 0; i < len(kv); i += 2 {
		m.Label = append(m.Label, &dto.LabelPair{Name: &kv[i], Value: &kv[i+1]})
	}
	return m
}

// clientBody is what a client sends: families sorted, every series with
// the partition label, labels and series sorted, recent timestamps.
func clientBody(t testing.TB) []byte {
	ts := verbatimNow.UnixMilli() - 1000
	return verbatimBody(t,
		vfam("a_gauge", dto.MetricType_GAUGE,
			vmetric(1, ts, "_id", "c1", "instance", "i1", "job", "a"),
			vmetric(2, ts, "_id", "c1", "instance", "i2", "job", "a"),
			vmetric(3, 0, "_id", "c1", "instance", "i2", "job", "b")),
		vfam("cluster:cpu:sum", dto.MetricType_GAUGE,
			vmetric(6, ts, "_id", "c1", "instance", "", "label_type", "m5.large")),
		vfam("up", dto.MetricType_GAUGE,
			vmetric(1, ts, "_id", "c1", "instance", "x", "job", "a", "team", "x")),
	)
}

func counterBody(t testing.TB) []byte {
	v := 5.0
	name, typ := "requests_total", dto.MetricType_COUNTER
	m := &dto.Metric{Counter: &dto.Counter{Value: &v}, Label: []*dto.LabelPair{{Name: proto.String("_id"), Value: proto.String("c1")}}}
	return verbatimBody(t, &dto.MetricFamily{Name: &name, Type: &typ, Metric: []*dto.Metric{m}})
}

func TestVerbatimTakesClientBodies(t *testing.T) {
	taken := requireSameSnapshot(t, clientBody(t), 0)
	require.Equal(t, 3, taken, "a client's body is taken whole")
	require.Equal(t, 1, requireSameSnapshot(t, counterBody(t), 0))
}

// TestVerbatimDeclines covers each reason to decline: the body is decoded
// instead, and the snapshot is the same.
func TestVerbatimDeclines(t *testing.T) {
	ts := verbatimNow.UnixMilli() - 1000
	ok := func(extra ...string) *dto.Metric {
		return vmetric(1, ts, append([]string{"_id", "c1", "instance", "i", "job", "a"}, extra...)...)
	}
	histogram := &dto.MetricFamily{
		Name: proto.String("h"), Type: dto.MetricType_HISTOGRAM.Enum(),
		Metric: []*dto.Metric{{
			Label:     []*dto.LabelPair{{Name: proto.String("_id"), Value: proto.String("c1")}},
			Histogram: &dto.Histogram{SampleCount: proto.Uint64(1), SampleSum: proto.Float64(1)},
		}},
	}
	for _, tc := range []struct {
		name string
		body []byte
		pick byte
	}{
		{"no partition label", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts, "job", "a"))), 0},
		{"labels out of order", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts, "job", "a", "_id", "c1"))), 0},
		{"series out of order", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, ok("z", "2"), ok("z", "1"))), 0},
		{"series twice", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, ok(), ok())), 0},
		{"too old", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts-2*time.Hour.Milliseconds(), "_id", "c1"))), 0},
		{"too new", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts+time.Hour.Milliseconds(), "_id", "c1"))), 0},
		{"elided label", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, ok("prometheus_replica", "r"))), 1},
		{"server label missing", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, ok())), 2},
		{"required label empty", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts, "_id", "c1", "instance", ""))), 4},
		{"not allowed", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts, "_id", "c1", "job", "b"))), 8},
		{"identity label missing", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, ok())), 32},
		{"foreign partition label", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts, "_id", "c2"))), 0},
		{"name given twice", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, ok("z", "1")), vfam("g", dto.MetricType_GAUGE, ok("z", "0"))), 0},
		{"type mismatch", verbatimBody(t, vfam("g", dto.MetricType_COUNTER, ok())), 0},
		{"histogram", verbatimBody(t, histogram), 0},
		{"empty value of another type", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, emptyValue(ok(), false))), 0},
		{"no value", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, emptyValue(ok(), true))), 0},
		{"invalid label name", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts, "_id", "c1", "a-b", "x"))), 0},
		{"reserved label name", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts, "__x", "1", "_id", "c1"))), 0},
		{"invalid UTF-8", verbatimBody(t, vfam("g", dto.MetricType_GAUGE, vmetric(1, ts, "_id", "c1", "job", "\xff"))), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Zero(t, requireSameSnapshot(t, tc.body, tc.pick))
		})
	}
	t.Run("a declined family leaves the others taken", func(t *testing.T) {
		body := verbatimBody(t, vfam("a", dto.MetricType_GAUGE, ok()), histogram, vfam("z", dto.MetricType_GAUGE, ok()))
		require.Equal(t, 2, requireSameSnapshot(t, body, 0))
	})
	t.Run("names out of order", func(t *testing.T) {
		body := verbatimBody(t, vfam("g", dto.MetricType_GAUGE, ok()), vfam("f", dto.MetricType_GAUGE, ok()))
		require.Equal(t, 1, requireSameSnapshot(t, body, 0), "f is decoded, g taken")
	})
	t.Run("allowed", func(t *testing.T) {
		body := verbatimBody(t, vfam("g", dto.MetricType_GAUGE, ok()), vfam("up", dto.MetricType_GAUGE, vmetric(1, ts, "_id", "c1")))
		require.Equal(t, 2, requireSameSnapshot(t, body, 8))
	})
	t.Run("a later family sharing a taken name", func(t *testing.T) {
		body := verbatimBody(t, vfam("a", dto.MetricType_GAUGE, ok("z", "1")), vfam("b", dto.MetricType_GAUGE, ok()), vfam("a", dto.MetricType_GAUGE, ok("z", "0"), ok("z", "1")))
		require.Zero(t, requireSameSnapshot(t, body, 0), "every family goes back through Validate")
	})
}

// TestVerbatimCopiesScatteredMetrics covers a family whose metric fields
// are not one run of shortest-length fields: the type after the first
// metric, and a length written in two bytes. It is still taken, its
// metrics copied into a block of their own.
func TestVerbatimCopiesScatteredMetrics(t *testing.T) {
	ts := verbatimNow.UnixMilli() - 1000
	m1, err := proto.Marshal(vmetric(1, ts, "_id", "c1", "job", "a"))
	require.NoError(t, err)
	m2, err := proto.Marshal(vmetric(2, ts, "_id", "c1", "job", "b"))
	require.NoError(t, err)
	require.Less(t, len(m1), 128)
	build := func(parts ...[]byte) []byte {
		var msg []byte
		for _, p := range parts {
			msg = append(msg, p...)
		}
		return protowire.AppendBytes(nil, msg)
	}
	field := func(tag byte, v []byte) []byte { return protowire.AppendBytes([]byte{tag}, v) }
	name := field(0x0a, []byte("g"))
	gauge := []byte{0x18, byte(dto.MetricType_GAUGE)}
	twoByteLength := append([]byte{0x22, byte(len(m1)) | 0x80, 0x00}, m1...)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"contiguous", build(name, gauge, field(0x22, m1), field(0x22, m2))},
		{"type between metrics", build(name, field(0x22, m1), gauge, field(0x22, m2))},
		{"a length in two bytes", build(name, gauge, twoByteLength, field(0x22, m2))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, 1, requireSameSnapshot(t, tc.body, 0))
		})
	}
}

// emptyValue replaces a gauge's value with an empty counter, or with nothing.
func emptyValue(m *dto.Metric, none bool) *dto.Metric {
	m.Gauge = nil
	if !none {
		m.Counter = &dto.Counter{}
	}
	return m
}

// FuzzVerbatimMatchesValidate feeds arbitrary bodies to both paths under a
// few server configurations: they must refuse together, or write the same
// snapshot file.
func FuzzVerbatimMatchesValidate(f *testing.F) {
	f.Add(clientBody(f), byte(0))
	f.Add(clientBody(f), byte(63))
	f.Add(counterBody(f), byte(2))
	// The reference payload, restamped so that the window keeps it, as
	// sent (labels unsorted, no partition label) and as validated.
	fams := t232(f)
	ts := verbatimNow.UnixMilli()
	for _, mf := range fams {
		for _, m := range mf.Metric {
			m.TimestampMs = &ts
		}
	}
	f.Add(verbatimBody(f, fams...), byte(0))
	res, err := validate.New(validate.Options{Now: func() time.Time { return verbatimNow }}, nil).Validate("c1", nil, fams)
	require.NoError(f, err)
	f.Add(verbatimBody(f, res.Families...), byte(0))
	f.Add(verbatimBody(f, res.Families...), byte(16))
	f.Fuzz(func(t *testing.T, body []byte, pick byte) {
		if len(body) > 64<<10 {
			return
		}
		requireSameSnapshot(t, body, pick)
	})
}

// TestVerbatimRandomBodies builds bodies near the form clients send, with
// faults sprinkled in at random (labels unsorted or missing, series repeated,
// names repeated, timestamps out of the window, other types), so that both
// the taken and the declined paths run often; every body must give the same
// snapshot both ways.
func TestVerbatimRandomBodies(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "cluster:x", "up", "z_total"}
	values := []string{"", "a", "b", "c1", "x", "x", "i1"}
	labelNames := []string{"_id", "instance", "job", "prometheus_replica", "region", "team"}
	chance := func(n int) bool { return rng.IntN(n) == 0 }
	takenTotal, bodies := 0, 2000
	for i := range bodies {
		var fams []*dto.MetricFamily
		for _, name := range names {
			if chance(3) {
				continue
			}
			typ := dto.MetricType_GAUGE
			if chance(6) {
				typ = dto.MetricType(rng.IntN(5))
			}
			mf := vfam(name, typ)
			for range 1 + rng.IntN(4) {
				ts := verbatimNow.UnixMilli() - int64(rng.IntN(1000))
				if chance(20) {
					ts -= 2 * time.Hour.Milliseconds()
				}
				if chance(4) {
					ts = 0
				}
				var kv []string
				for _, ln := range labelNames {
					switch {
					case ln == "_id" && !chance(15):
						v := "c1"
						if chance(30) {
							v = "c2"
						}
						kv = append(kv, ln, v)
					case ln == "region" && !chance(3):
						kv = append(kv, ln, "eu")
					case ln != "_id" && ln != "region" && chance(2):
						kv = append(kv, ln, values[rng.IntN(len(values))])
					}
				}
				if chance(15) && len(kv) >= 4 {
					kv[0], kv[1], kv[2], kv[3] = kv[2], kv[3], kv[0], kv[1]
				}
				m := vmetric(float64(rng.IntN(3)), ts, kv...)
				switch typ {
				case dto.MetricType_COUNTER:
					m.Counter, m.Gauge = &dto.Counter{Value: m.Gauge.Value}, nil
				case dto.MetricType_UNTYPED:
					m.Untyped, m.Gauge = &dto.Untyped{Value: m.Gauge.Value}, nil
				}
				mf.Metric = append(mf.Metric, m)
			}
			if !chance(10) {
				slices.SortStableFunc(mf.Metric, func(a, b *dto.Metric) int { return compareLabels(a.Label, b.Label) })
			}
			fams = append(fams, mf)
			if chance(25) {
				fams = append(fams, vfam(name, typ, vmetric(1, verbatimNow.UnixMilli(), "_id", "c1")))
			}
		}
		if chance(10) {
			rng.Shuffle(len(fams), func(i, j int) { fams[i], fams[j] = fams[j], fams[i] })
		}
		body := verbatimBody(t, fams...)
		pick := byte(0) // the common configuration half of the time
		if chance(2) {
			pick = byte(rng.IntN(64))
		}
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			takenTotal += requireSameSnapshot(t, body, pick)
		})
	}
	// The generator must reach the verbatim path, or this test proves little.
	require.Greater(t, takenTotal, bodies/2, "families taken over %d bodies", bodies)
	t.Logf("%d families taken over %d bodies", takenTotal, bodies)
}

func compareLabels(a, b []*dto.LabelPair) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := strings.Compare(a[i].GetName(), b[i].GetName()); c != 0 {
			return c
		}
		if c := strings.Compare(a[i].GetValue(), b[i].GetValue()); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}
