package upload

import (
	"math"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// A hand decoder for the MetricFamily messages real clients send: counters,
// gauges and untyped samples with labels and optional timestamps, which is
// all the reference payload holds. The generated decoder allocates every
// label pair, string, value and pointer on its own (about 50 allocations per
// series) and dominates an upload's CPU; this one copies the message into
// one string, takes every string as a substring of it, and allocates each
// kind of element once per family, in one slice.
//
// It decodes only what it can decode exactly as proto.Unmarshal would. For
// anything else (summaries, histograms, exemplars, created timestamps,
// unknown fields or enum values, a singular message field given twice, or
// malformed wire data) it reports false and the caller uses proto.Unmarshal,
// which also words the errors. FuzzFastFamilyMatchesProto holds the two to
// the same result.

// familyShape counts the elements of one family, for one allocation each.
type familyShape struct {
	metrics, labels, strings, timestamps, floats int
	gauges, counters, untyped                    int
}

// unmarshalFamilyFast decodes b into a new MetricFamily, or reports false.
func unmarshalFamilyFast(b []byte) (*dto.MetricFamily, bool) {
	var shape familyShape
	if !checkFamily(b, &shape) {
		return nil, false
	}
	f := &familyFill{
		src:      string(b),
		metrics:  make([]dto.Metric, shape.metrics),
		mptrs:    make([]*dto.Metric, shape.metrics),
		labels:   make([]dto.LabelPair, shape.labels),
		lptrs:    make([]*dto.LabelPair, shape.labels),
		strs:     make([]string, shape.strings),
		floats:   make([]float64, shape.floats),
		ints:     make([]int64, shape.timestamps),
		gauges:   make([]dto.Gauge, shape.gauges),
		counters: make([]dto.Counter, shape.counters),
		untyped:  make([]dto.Untyped, shape.untyped),
	}
	mf := &dto.MetricFamily{}
	f.family(mf, b)
	if shape.metrics > 0 {
		mf.Metric = f.mptrs
	}
	return mf, true
}

// checkFamily checks that b holds only what the fast path decodes, and
// counts its elements.
func checkFamily(b []byte, shape *familyShape) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 2 || num == 5) && typ == protowire.BytesType:
			_, n = protowire.ConsumeBytes(b)
			shape.strings++
		case num == 3 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			if _, known := dto.MetricType_name[int32(v)]; n >= 0 && !known {
				return false // a closed enum's unknown value is kept as an unknown field
			}
		case num == 4 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 && !checkMetric(v, shape) {
				return false
			}
		default:
			return false
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// checkMetric checks one Metric message and counts its elements.
func checkMetric(b []byte, shape *familyShape) bool {
	var seen [8]bool
	shape.metrics++
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 && !checkLabelPair(v, shape) {
				return false
			}
			shape.labels++
		case (num == 2 || num == 3 || num == 5) && typ == protowire.BytesType:
			if seen[num] {
				return false // a singular message given twice is merged: leave it to proto
			}
			seen[num] = true
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 && !checkValueMessage(v) {
				return false
			}
			if len(v) > 0 {
				shape.floats++
			}
			switch num {
			case 2:
				shape.gauges++
			case 3:
				shape.counters++
			default:
				shape.untyped++
			}
		case num == 6 && typ == protowire.VarintType:
			_, n = protowire.ConsumeVarint(b)
			if !seen[6] {
				shape.timestamps++
			}
			seen[6] = true
		default:
			return false
		}
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

func checkLabelPair(b []byte, shape *familyShape) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || (num != 1 && num != 2) || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		if _, n = protowire.ConsumeBytes(b); n < 0 {
			return false
		}
		shape.strings++
		b = b[n:]
	}
	return true
}

// checkValueMessage accepts a Gauge, Counter or Untyped message holding nothing
// but its value (field 1, a double), possibly repeated.
func checkValueMessage(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 1 || typ != protowire.Fixed64Type {
			return false
		}
		b = b[n:]
		if _, n = protowire.ConsumeFixed64(b); n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// familyFill hands out the elements of one family from its slabs.
type familyFill struct {
	src                        string // the message as one string; every string is a substring
	metrics                    []dto.Metric
	mptrs                      []*dto.Metric
	labels                     []dto.LabelPair
	lptrs                      []*dto.LabelPair
	strs                       []string
	floats                     []float64
	ints                       []int64
	gauges                     []dto.Gauge
	counters                   []dto.Counter
	untyped                    []dto.Untyped
	mi, li, si, fi, ti, gi, ci int
	ui                         int
}

// str returns a pointer to the string at src[off:off+n].
func (f *familyFill) str(off, n int) *string {
	p := &f.strs[f.si]
	f.si++
	*p = f.src[off : off+n]
	return p
}

// family decodes a MetricFamily that checkFamily accepted. Offsets into src
// are positions within b, which src copies.
func (f *familyFill) family(mf *dto.MetricFamily, b []byte) {
	at := func(rest []byte) int { return len(f.src) - len(rest) }
	for len(b) > 0 {
		num, _, n := protowire.ConsumeTag(b)
		b = b[n:]
		switch num {
		case 1, 2, 5:
			v, n := protowire.ConsumeBytes(b)
			s := f.str(at(b)+n-len(v), len(v))
			switch num {
			case 1:
				mf.Name = s
			case 2:
				mf.Help = s
			default:
				mf.Unit = s
			}
			b = b[n:]
		case 3:
			v, n := protowire.ConsumeVarint(b)
			t := dto.MetricType(int32(v))
			mf.Type = &t
			b = b[n:]
		case 4:
			v, n := protowire.ConsumeBytes(b)
			f.metric(v, at(b)+n-len(v))
			b = b[n:]
		}
	}
}

// metric decodes one Metric message at offset base of src.
func (f *familyFill) metric(b []byte, base int) {
	m := &f.metrics[f.mi]
	f.mptrs[f.mi] = m
	f.mi++
	end := base + len(b)
	at := func(rest []byte) int { return end - len(rest) }
	first := f.li
	for len(b) > 0 {
		num, _, n := protowire.ConsumeTag(b)
		b = b[n:]
		switch num {
		case 1:
			v, n := protowire.ConsumeBytes(b)
			lp := &f.labels[f.li]
			f.lptrs[f.li] = lp
			f.li++
			f.labelPair(lp, v, at(b)+n-len(v))
			b = b[n:]
		case 2, 3, 5:
			v, n := protowire.ConsumeBytes(b)
			var value **float64
			switch num {
			case 2:
				g := &f.gauges[f.gi]
				f.gi++
				m.Gauge, value = g, &g.Value
			case 3:
				c := &f.counters[f.ci]
				f.ci++
				m.Counter, value = c, &c.Value
			default:
				u := &f.untyped[f.ui]
				f.ui++
				m.Untyped, value = u, &u.Value
			}
			for len(v) > 0 { // field 1, fixed64, as often as given: the last wins
				_, _, tn := protowire.ConsumeTag(v)
				bits, vn := protowire.ConsumeFixed64(v[tn:])
				v = v[tn+vn:]
				if *value == nil {
					*value = &f.floats[f.fi]
					f.fi++
				}
				**value = math.Float64frombits(bits)
			}
			b = b[n:]
		case 6:
			v, n := protowire.ConsumeVarint(b)
			if m.TimestampMs == nil {
				m.TimestampMs = &f.ints[f.ti]
				f.ti++
			}
			*m.TimestampMs = int64(v)
			b = b[n:]
		}
	}
	if f.li > first {
		// A full slice expression: appending a label to this metric
		// (validation adds _id) must not overwrite the next metric's.
		m.Label = f.lptrs[first:f.li:f.li]
	}
}

// labelPair decodes one LabelPair message at offset base of src.
func (f *familyFill) labelPair(lp *dto.LabelPair, b []byte, base int) {
	end := base + len(b)
	for len(b) > 0 {
		num, _, n := protowire.ConsumeTag(b)
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		s := f.str(end-len(b)+n-len(v), len(v))
		if num == 1 {
			lp.Name = s
		} else {
			lp.Value = s
		}
		b = b[n:]
	}
}

// appendFamilyFast appends mf as protobuf, exactly as proto.Marshal writes
// it, when mf holds only what the hand decoder decodes; otherwise it returns
// dst unchanged and false. It computes each metric's size by hand instead of
// through the generated code's reflective sizer.
func appendFamilyFast(dst []byte, mf *dto.MetricFamily) ([]byte, bool) {
	if !plainMessage(mf) {
		return dst, false
	}
	for _, m := range mf.Metric {
		if m == nil || m.Summary != nil || m.Histogram != nil || !plainMessage(m) ||
			(m.Counter != nil && (m.Counter.Exemplar != nil || m.Counter.CreatedTimestamp != nil || !plainMessage(m.Counter))) ||
			(m.Gauge != nil && !plainMessage(m.Gauge)) || (m.Untyped != nil && !plainMessage(m.Untyped)) {
			return dst, false
		}
		for _, lp := range m.Label {
			if lp == nil || !plainMessage(lp) {
				return dst, false
			}
		}
	}
	if mf.Name != nil {
		dst = protowire.AppendString(protowire.AppendTag(dst, 1, protowire.BytesType), *mf.Name)
	}
	if mf.Help != nil {
		dst = protowire.AppendString(protowire.AppendTag(dst, 2, protowire.BytesType), *mf.Help)
	}
	if mf.Type != nil {
		dst = protowire.AppendVarint(protowire.AppendTag(dst, 3, protowire.VarintType), uint64(int64(*mf.Type)))
	}
	for _, m := range mf.Metric {
		dst = protowire.AppendTag(dst, 4, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(metricSize(m)))
		dst = appendMetric(dst, m)
	}
	if mf.Unit != nil {
		dst = protowire.AppendString(protowire.AppendTag(dst, 5, protowire.BytesType), *mf.Unit)
	}
	return dst, true
}

// plainMessage reports whether m carries no unknown fields, which the hand
// encoder would not write.
func plainMessage(m interface{ ProtoReflect() protoreflect.Message }) bool {
	return len(m.ProtoReflect().GetUnknown()) == 0
}

// The sizes of what appendMetric writes; every field number is below 16,
// so each tag is one byte.
func labelPairSize(lp *dto.LabelPair) int {
	n := 0
	if lp.Name != nil {
		n += 1 + protowire.SizeBytes(len(*lp.Name))
	}
	if lp.Value != nil {
		n += 1 + protowire.SizeBytes(len(*lp.Value))
	}
	return n
}

func valueSize(v *float64) int {
	if v == nil {
		return 0
	}
	return 1 + 8
}

func metricSize(m *dto.Metric) int {
	n := 0
	for _, lp := range m.Label {
		n += 1 + protowire.SizeBytes(labelPairSize(lp))
	}
	if m.Gauge != nil {
		n += 1 + protowire.SizeBytes(valueSize(m.Gauge.Value))
	}
	if m.Counter != nil {
		n += 1 + protowire.SizeBytes(valueSize(m.Counter.Value))
	}
	if m.Untyped != nil {
		n += 1 + protowire.SizeBytes(valueSize(m.Untyped.Value))
	}
	if m.TimestampMs != nil {
		n += 1 + protowire.SizeVarint(uint64(*m.TimestampMs))
	}
	return n
}

// appendMetric writes the fields in field-number order, as proto.Marshal does.
func appendMetric(dst []byte, m *dto.Metric) []byte {
	for _, lp := range m.Label {
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(labelPairSize(lp)))
		if lp.Name != nil {
			dst = protowire.AppendString(protowire.AppendTag(dst, 1, protowire.BytesType), *lp.Name)
		}
		if lp.Value != nil {
			dst = protowire.AppendString(protowire.AppendTag(dst, 2, protowire.BytesType), *lp.Value)
		}
	}
	appendValue := func(dst []byte, num protowire.Number, v *float64) []byte {
		dst = protowire.AppendTag(dst, num, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(valueSize(v)))
		if v != nil {
			dst = protowire.AppendFixed64(protowire.AppendTag(dst, 1, protowire.Fixed64Type), math.Float64bits(*v))
		}
		return dst
	}
	if m.Gauge != nil {
		dst = appendValue(dst, 2, m.Gauge.Value)
	}
	if m.Counter != nil {
		dst = appendValue(dst, 3, m.Counter.Value)
	}
	if m.Untyped != nil {
		dst = appendValue(dst, 5, m.Untyped.Value)
	}
	if m.TimestampMs != nil {
		dst = protowire.AppendVarint(protowire.AppendTag(dst, 6, protowire.VarintType), uint64(*m.TimestampMs))
	}
	return dst
}

// AppendMetrics appends metrics as the protobuf of a MetricFamily holding
// only them (the store's block format), as proto.Marshal writes it.
func AppendMetrics(dst []byte, metrics []*dto.Metric) ([]byte, error) {
	mf := &dto.MetricFamily{Metric: metrics}
	if out, ok := appendFamilyFast(dst, mf); ok {
		return out, nil
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, mf)
}
