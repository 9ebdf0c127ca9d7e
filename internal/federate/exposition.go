package federate

import (
	"bufio"
	"errors"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/telemeter/telemeter/internal/store"
)

// exposition writes one response, one family name at a time. Its buffers are
// reused across families and clusters.
type exposition struct {
	h      *handler
	w      *bufio.Writer
	metas  []store.Meta
	proto  bool
	series int // written so far

	block []byte // decoded block of one family of one cluster
	out   []byte // a transformed block, or one text line
	group []byte // protobuf: the blocks of one family name, within budget
	lens  []int  // protobuf: transformed length of each block, -1 if left out
	s     sample
}

func (e *exposition) meta(r ref) (store.Meta, store.FamilyMeta) {
	m := e.metas[r.c]
	return m, m.Families[r.f]
}

// family writes every cluster's series of one family name.
func (e *exposition) family(refs []ref) error {
	_, first := e.meta(refs[0])
	if !validMetricName(first.Name) {
		e.h.metrics.skipped.WithLabelValues(reasonInvalid).Inc()
		e.h.logger.Warn("family name not valid in the text format, not exported", "family", first.Name)
		return nil
	}
	// The type most clusters use wins (ties: the smaller type number), so
	// one cluster cannot hide the others' series by pushing a family under
	// another type. The first HELP among clusters of that type is used.
	typ := majorityType(e, refs)
	help := ""
	for _, r := range refs {
		if _, f := e.meta(r); f.Type == typ && f.Help != "" {
			help = f.Help
			break
		}
	}
	if e.proto {
		return e.protoFamily(refs, typ, help)
	}
	return e.textFamily(refs, typ, help)
}

// majorityType counts the clusters carrying each type of one family.
func majorityType(e *exposition, refs []ref) dto.MetricType {
	var counts [8]int
	for _, r := range refs {
		if _, f := e.meta(r); int(f.Type) >= 0 && int(f.Type) < len(counts) {
			counts[f.Type]++
		}
	}
	best := 0
	for t := range counts {
		if counts[t] > counts[best] {
			best = t
		}
	}
	return dto.MetricType(best)
}

// read returns the decoded block of r, or ok false when it is left out.
func (e *exposition) read(r ref, typ dto.MetricType) ([]byte, bool) {
	m, f := e.meta(r)
	if f.Type != typ {
		e.h.metrics.skipped.WithLabelValues(reasonTypeConflict).Inc()
		e.h.logger.Debug("family type conflicts with another cluster's, block left out",
			"cluster", m.ClusterID, "family", f.Name, "type", f.Type, "exported_type", typ)
		return nil, false
	}
	b, err := e.h.src.ReadFamilyBlock(m, int(r.f), e.block)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, false // deleted since the listing
		}
		e.h.metrics.skipped.WithLabelValues(reasonReadError).Inc()
		e.h.logger.Warn("cannot read family block, left out", "cluster", m.ClusterID, "family", f.Name, "err", err)
		return nil, false
	}
	e.block = b
	return b, true
}

// nextMetric splits the first metric entry (field 4) off a decoded block.
func nextMetric(b []byte) (metric, rest []byte, err error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != 4 || typ != protowire.BytesType {
		return nil, nil, errors.New("expected a metric entry")
	}
	metric, m := protowire.ConsumeBytes(b[n:])
	if m < 0 {
		return nil, nil, errors.New("truncated metric entry")
	}
	return metric, b[n+m:], nil
}

func (e *exposition) textFamily(refs []ref, typ dto.MetricType, help string) error {
	headerDone := false
	for _, r := range refs {
		b, ok := e.read(r, typ)
		if !ok {
			continue
		}
		for len(b) > 0 {
			metric, rest, err := nextMetric(b)
			if err != nil {
				e.h.metrics.skipped.WithLabelValues(reasonReadError).Inc()
				break
			}
			b = rest
			if err := e.s.parse(metric); err != nil || !e.s.valid(typ) {
				e.h.metrics.skipped.WithLabelValues(reasonInvalid).Inc()
				continue
			}
			if !headerDone {
				e.out = appendTextHeader(e.out[:0], refs[0].name, help, typ)
				if _, err := e.w.Write(e.out); err != nil {
					return err
				}
				headerDone = true
			}
			e.out = e.s.appendText(e.out[:0], refs[0].name, typ, e.h.keepTS)
			if _, err := e.w.Write(e.out); err != nil {
				return err
			}
			e.series++
		}
	}
	return nil
}

// transform returns a block ready to copy into a protobuf MetricFamily: the
// block itself when timestamps are kept, else a copy without them, written to
// dst. It also counts the series.
func (e *exposition) transform(dst, b []byte) ([]byte, int, error) {
	if e.h.keepTS {
		n := 0
		for rest := b; len(rest) > 0; n++ {
			var err error
			if _, rest, err = nextMetric(rest); err != nil {
				return nil, 0, err
			}
		}
		return b, n, nil
	}
	return stripTimestamps(dst[:0], b)
}

func (e *exposition) protoFamily(refs []ref, typ dto.MetricType, help string) error {
	var (
		total, series int
		fits          = true
	)
	e.group, e.lens = e.group[:0], e.lens[:0]
	for _, r := range refs {
		b, ok := e.read(r, typ)
		if !ok {
			e.lens = append(e.lens, -1)
			continue
		}
		t, n, err := e.transform(e.out, b)
		if err != nil {
			e.h.metrics.skipped.WithLabelValues(reasonReadError).Inc()
			e.lens = append(e.lens, -1)
			continue
		}
		if !e.h.keepTS {
			e.out = t
		}
		e.lens = append(e.lens, len(t))
		total += len(t)
		series += n
		if fits && len(e.group)+len(t) <= e.h.groupBudget {
			e.group = appendBounded(e.group, t, e.h.groupBudget)
		} else {
			fits = false
		}
	}
	if total == 0 {
		return nil
	}
	head := appendProtoHeader(e.out[:0:0], refs[0].name, help, typ)
	msg := protowire.AppendVarint(nil, uint64(len(head)+total))
	if _, err := e.w.Write(append(msg, head...)); err != nil {
		return err
	}
	e.series += series
	if fits {
		_, err := e.w.Write(e.group)
		return err
	}
	// Second pass for a family too large to buffer. The length is already
	// written, so a block that cannot be read again, or reads differently
	// (its cluster pushed in between), is replaced by padding of the same
	// length that decoders skip as an unknown field.
	for k, r := range refs {
		if e.lens[k] < 0 {
			continue
		}
		var t []byte
		b, ok := e.read(r, typ)
		if ok {
			var err error
			if t, _, err = e.transform(e.out, b); err != nil {
				ok = false
			} else if !e.h.keepTS {
				e.out = t
			}
		}
		if !ok || len(t) != e.lens[k] {
			e.h.metrics.skipped.WithLabelValues(reasonReadError).Inc()
			t = appendPadding(e.out[:0], e.lens[k])
			e.out = t
		}
		if _, err := e.w.Write(t); err != nil {
			return err
		}
	}
	return nil
}

// appendBounded appends t to b, growing b by doubling but never beyond
// limit, so that buffering a family allocates at most twice the limit.
func appendBounded(b, t []byte, limit int) []byte {
	if need := len(b) + len(t); need > cap(b) {
		grown := make([]byte, len(b), min(limit, max(need, 2*cap(b), 64<<10)))
		copy(grown, b)
		b = grown
	}
	return append(b, t...)
}

// appendProtoHeader appends the MetricFamily fields before the metrics:
// name (1), help (2) when there is one, type (3).
func appendProtoHeader(b []byte, name, help string, typ dto.MetricType) []byte {
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	if help != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, help)
	}
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(typ))
}

// paddingField is a MetricFamily field number no version of the message
// uses; decoders keep or skip it as an unknown field.
const paddingField = 15

// appendPadding appends n bytes (n >= 2) of unknown length-delimited fields.
func appendPadding(b []byte, n int) []byte {
	for n > 0 {
		done := false
		// One field is a 1-byte tag, a varint length k and k zero bytes.
		for v := 1; v <= 5; v++ {
			k := n - 1 - v
			if k >= 0 && protowire.SizeVarint(uint64(k)) == v {
				b = protowire.AppendTag(b, paddingField, protowire.BytesType)
				b = protowire.AppendVarint(b, uint64(k))
				b = append(b, make([]byte, k)...)
				n, done = 0, true
				break
			}
		}
		if !done {
			// No single field has exactly n bytes (n = 130, for one): write an
			// empty field and pad the rest.
			b = append(protowire.AppendTag(b, paddingField, protowire.BytesType), 0)
			n -= 2
		}
	}
	return b
}

// stripTimestamps appends to dst a copy of a decoded block without the
// timestamp_ms field (6) of its metrics, and counts the metrics.
func stripTimestamps(dst, b []byte) ([]byte, int, error) {
	n := 0
	var spare [2][2]int
	cuts := spare[:0] // timestamp fields of one metric, as byte ranges
	for len(b) > 0 {
		metric, rest, err := nextMetric(b)
		if err != nil {
			return nil, 0, err
		}
		b = rest
		n++
		cuts = cuts[:0]
		size := len(metric)
		err = fieldSpans(metric, func(num protowire.Number, typ protowire.Type, start, end int) {
			// Field 6 with another wire type is not a timestamp but an
			// unknown field; it is copied like any other.
			if num == 6 && typ == protowire.VarintType {
				cuts = append(cuts, [2]int{start, end})
				size -= end - start
			}
		})
		if err != nil {
			return nil, 0, err
		}
		dst = protowire.AppendTag(dst, 4, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size))
		from := 0
		for _, c := range cuts {
			dst = append(dst, metric[from:c[0]]...)
			from = c[1]
		}
		dst = append(dst, metric[from:]...)
	}
	return dst, n, nil
}

// fieldSpans calls fn with the byte range, tag included, of every field of a
// message.
func fieldSpans(b []byte, fn func(num protowire.Number, typ protowire.Type, start, end int)) error {
	for p := 0; p < len(b); {
		num, typ, tn := protowire.ConsumeTag(b[p:])
		if tn < 0 {
			return errMalformed
		}
		var vn int
		switch typ {
		case protowire.BytesType:
			l, ln := protowire.ConsumeVarint(b[p+tn:])
			if ln < 0 || l > uint64(len(b)-p-tn-ln) {
				return errMalformed
			}
			vn = ln + int(l)
		case protowire.Fixed64Type:
			vn = 8
		case protowire.Fixed32Type:
			vn = 4
		default:
			vn = protowire.ConsumeFieldValue(num, typ, b[p+tn:])
		}
		if vn < 0 || vn > len(b)-p-tn {
			return errMalformed
		}
		fn(num, typ, p, p+tn+vn)
		p += tn + vn
	}
	return nil
}
