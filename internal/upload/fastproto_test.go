package upload

import (
	"bytes"
	"math"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// sameAsProto decodes b with the fast path and with proto.Unmarshal. When
// the fast path takes b, both must succeed with the same message; it
// reports whether the fast path took b.
func sameAsProto(tb testing.TB, b []byte) bool {
	tb.Helper()
	fast, ok := unmarshalFamilyFast(b)
	if !ok {
		return false
	}
	ref := &dto.MetricFamily{}
	if err := proto.Unmarshal(b, ref); err != nil {
		tb.Fatalf("fast path accepted %x, proto.Unmarshal refused it: %v", b, err)
	}
	det := proto.MarshalOptions{Deterministic: true}
	want, err := det.Marshal(ref)
	require.NoError(tb, err)
	got, err := det.Marshal(fast)
	require.NoError(tb, err)
	if !bytes.Equal(got, want) {
		tb.Fatalf("fast path and proto.Unmarshal differ on %x:\nfast:  %v\nproto: %v", b, fast, ref)
	}
	// What the hand decoder takes, the hand encoder writes as proto.Marshal does.
	marshaled, err := proto.Marshal(ref)
	require.NoError(tb, err)
	appended, ok := appendFamilyFast([]byte("prefix"), fast)
	if !ok || !bytes.Equal(appended[len("prefix"):], marshaled) || string(appended[:len("prefix")]) != "prefix" {
		tb.Fatalf("hand encoder (ok %v) and proto.Marshal differ on %v:\nhand:  %x\nproto: %x", ok, ref, appended, marshaled)
	}
	return true
}

func TestFastFamilyT232(t *testing.T) {
	for _, mf := range loadT232(t) {
		b, err := proto.Marshal(mf)
		require.NoError(t, err)
		require.True(t, sameAsProto(t, b), "family %s should take the fast path", mf.GetName())
	}
}

// wire builds protobuf by hand, to make what the generated encoder never
// writes: repeated singular fields, unknown fields, odd wire types.
type wire []byte

func (w wire) str(num protowire.Number, s string) wire {
	return protowire.AppendString(protowire.AppendTag(w, num, protowire.BytesType), s)
}
func (w wire) msg(num protowire.Number, m wire) wire {
	return protowire.AppendBytes(protowire.AppendTag(w, num, protowire.BytesType), m)
}
func (w wire) varint(num protowire.Number, v uint64) wire {
	return protowire.AppendVarint(protowire.AppendTag(w, num, protowire.VarintType), v)
}
func (w wire) double(num protowire.Number, f float64) wire {
	return protowire.AppendFixed64(protowire.AppendTag(w, num, protowire.Fixed64Type), math.Float64bits(f))
}

func TestFastFamilyCases(t *testing.T) {
	label := func(n, v string) wire { return wire(nil).str(1, n).str(2, v) }
	gauge := func(v float64) wire { return wire(nil).double(1, v) }
	for _, tc := range []struct {
		name string
		b    wire
		fast bool
	}{
		{"empty", wire{}, true},
		{"name only", wire(nil).str(1, "up"), true},
		{"name given twice: the last wins", wire(nil).str(1, "a").str(1, "b"), true},
		{"help, unit, type", wire(nil).str(1, "a").str(2, "help \xff").str(5, "seconds").varint(3, 1), true},
		{"type given twice", wire(nil).varint(3, 0).varint(3, 1), true},
		{"type beyond int32 truncates to a known value", wire(nil).varint(3, 1<<32+1), true},
		{"gauge with labels and timestamp", wire(nil).str(1, "g").varint(3, 1).msg(4, wire(nil).msg(1, label("a", "1")).msg(1, label("b", "")).msg(2, gauge(3.5)).varint(6, 1562168610163)), true},
		{"negative timestamp, given twice", wire(nil).msg(4, wire(nil).msg(2, gauge(1)).varint(6, math.MaxUint64).varint(6, 7)), true},
		{"NaN and infinities", wire(nil).msg(4, wire(nil).msg(2, gauge(math.NaN()))).msg(4, wire(nil).msg(3, gauge(math.Inf(1)))).msg(4, wire(nil).msg(5, gauge(math.Inf(-1)))), true},
		{"value given twice in one message", wire(nil).msg(4, wire(nil).msg(3, wire(nil).double(1, 1).double(1, 2))), true},
		{"empty value message", wire(nil).msg(4, wire(nil).msg(2, wire{})), true},
		{"empty metric and empty label pair", wire(nil).msg(4, wire{}).msg(4, wire(nil).msg(1, wire{})), true},
		{"label name given twice", wire(nil).msg(4, wire(nil).msg(1, wire(nil).str(1, "a").str(1, "b").str(2, "v").str(2, "w"))), true},
		{"gauge and counter on one metric", wire(nil).msg(4, wire(nil).msg(2, gauge(1)).msg(3, gauge(2))), true},

		{"unknown type value", wire(nil).varint(3, 9), false},
		{"unknown family field", wire(nil).str(1, "a").varint(9, 1), false},
		{"name as a varint", wire(nil).varint(1, 1), false},
		{"summary", wire(nil).msg(4, wire(nil).msg(4, wire(nil).varint(1, 3))), false},
		{"histogram", wire(nil).msg(4, wire(nil).msg(7, wire{})), false},
		{"counter with exemplar", wire(nil).msg(4, wire(nil).msg(3, wire(nil).double(1, 1).msg(2, wire{}))), false},
		{"gauge given twice is merged", wire(nil).msg(4, wire(nil).msg(2, gauge(1)).msg(2, wire{})), false},
		{"unknown label pair field", wire(nil).msg(4, wire(nil).msg(1, wire(nil).str(3, "x"))), false},
		{"value as a varint", wire(nil).msg(4, wire(nil).msg(2, wire(nil).varint(1, 1))), false},
		{"truncated", wire(nil).str(1, "abc")[:3], false},
		{"truncated metric", wire(nil).msg(4, wire(nil).msg(1, label("a", "b")))[:5], false},
		{"group wire type", wire{0x0b, 0x0c}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.fast, sameAsProto(t, tc.b))
		})
	}
}

func TestAppendFamilyFastRefuses(t *testing.T) {
	withUnknown := &dto.MetricFamily{}
	require.NoError(t, proto.Unmarshal(wire(nil).str(1, "a").varint(9, 1), withUnknown))
	labelUnknown := &dto.LabelPair{}
	require.NoError(t, proto.Unmarshal(wire(nil).str(1, "a").varint(7, 1), labelUnknown))
	one := proto.Float64(1)
	for name, mf := range map[string]*dto.MetricFamily{
		"unknown family field": withUnknown,
		"unknown label field":  {Metric: []*dto.Metric{{Label: []*dto.LabelPair{labelUnknown}}}},
		"summary":              {Metric: []*dto.Metric{{Summary: &dto.Summary{}}}},
		"histogram":            {Metric: []*dto.Metric{{Histogram: &dto.Histogram{}}}},
		"exemplar":             {Metric: []*dto.Metric{{Counter: &dto.Counter{Value: one, Exemplar: &dto.Exemplar{}}}}},
		"nil metric":           {Metric: []*dto.Metric{nil}},
		"nil label pair":       {Metric: []*dto.Metric{{Label: []*dto.LabelPair{nil}}}},
	} {
		out, ok := appendFamilyFast([]byte("x"), mf)
		require.False(t, ok, name)
		require.Equal(t, "x", string(out), name)
	}
}

// Validation appends the identity labels to each metric; with labels cut
// from one slab, an append must never write into the next metric's.
func TestFastFamilyLabelsDoNotAlias(t *testing.T) {
	b := wire(nil).str(1, "g").varint(3, 1).
		msg(4, wire(nil).msg(1, wire(nil).str(1, "a").str(2, "1")).msg(2, wire(nil).double(1, 1))).
		msg(4, wire(nil).msg(1, wire(nil).str(1, "b").str(2, "2")).msg(2, wire(nil).double(1, 2)))
	mf, ok := unmarshalFamilyFast(b)
	require.True(t, ok)
	first := mf.Metric[0]
	first.Label = append(first.Label, &dto.LabelPair{Name: proto.String("_id"), Value: proto.String("x")})
	require.Equal(t, "b", mf.Metric[1].Label[0].GetName())
	require.Len(t, mf.Metric[1].Label, 1)
}

// The decoded strings must not share memory with the buffer decodeProto
// reuses for the next message.
func TestFastFamilyOwnsItsStrings(t *testing.T) {
	b := wire(nil).str(1, "up").msg(4, wire(nil).msg(1, wire(nil).str(1, "job").str(2, "x")).msg(2, wire(nil).double(1, 1)))
	mf, ok := unmarshalFamilyFast(b)
	require.True(t, ok)
	for i := range b {
		b[i] = 0
	}
	require.Equal(t, "up", mf.GetName())
	require.Equal(t, "job", mf.Metric[0].Label[0].GetName())
	require.Equal(t, "x", mf.Metric[0].Label[0].GetValue())
}

// FuzzFastFamilyMatchesProto: wherever the hand decoder takes a message,
// proto.Unmarshal takes it too and builds the same family.
func FuzzFastFamilyMatchesProto(f *testing.F) {
	for _, mf := range loadT232(f)[:5] {
		b, err := proto.Marshal(mf)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(wire(nil).msg(4, wire(nil).msg(3, wire(nil).double(1, 1).double(1, 2)).varint(6, 5).varint(6, 6))))
	f.Add([]byte(wire(nil).str(1, "a").str(1, "b").msg(4, wire(nil).msg(1, wire(nil).str(1, "a").str(1, "b")))))
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsProto(t, b)
	})
}

func BenchmarkUnmarshalFamily(b *testing.B) {
	var msgs [][]byte
	size := 0
	for _, mf := range loadT232(b) {
		m, err := proto.Marshal(mf)
		require.NoError(b, err)
		msgs = append(msgs, m)
		size += len(m)
	}
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			for _, m := range msgs {
				if _, ok := unmarshalFamilyFast(m); !ok {
					b.Fatal("fell back")
				}
			}
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			for _, m := range msgs {
				if err := proto.Unmarshal(m, &dto.MetricFamily{}); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

func BenchmarkAppendFamily(b *testing.B) {
	fams := loadT232(b)
	var buf []byte
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, mf := range fams {
				var ok bool
				if buf, ok = appendFamilyFast(buf[:0], mf); !ok {
					b.Fatal("fell back")
				}
			}
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, mf := range fams {
				var err error
				if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf[:0], mf); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
