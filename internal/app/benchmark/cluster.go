package benchmark

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/klauspost/compress/s2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/telemeter/telemeter/internal/upload"
)

// cluster is one simulated cluster. At any moment it is held by exactly one
// goroutine (the scheduler or one pusher), so its fields need no lock.
type cluster struct {
	id      string
	idLabel []byte // the encoded _id label
	extra   []byte // other labels /authorize returned, encoded
	jwt     string
	pushURL string // Pushgateway target: the cluster's group
	values  []float64
	rng     *rand.Rand
	pushes  int   // attempts so far, against --count
	lastTS  int64 // timestamp of the last body, milliseconds

	next time.Time // when the next push is due
	seq  uint64    // tie-breaker among equal next times: first come, first served
}

func newCluster(id string, t *template, rng *rand.Rand) *cluster {
	return &cluster{
		id:      id,
		idLabel: appendLabel(nil, upload.IDLabel, id),
		values:  slices.Clone(t.initial),
		rng:     rng,
	}
}

// setIdentity keeps the labels /authorize returned besides _id, which the
// cluster always sets to its own ID. It returns the names that clash with
// template labels (the server would see them twice).
func (c *cluster) setIdentity(t *template, labels map[string]string) []string {
	c.extra = c.extra[:0]
	var clashes []string
	for _, name := range slices.Sorted(maps.Keys(labels)) {
		if name == upload.IDLabel {
			continue
		}
		if _, ok := t.names[name]; ok {
			clashes = append(clashes, name)
		}
		c.extra = appendLabel(c.extra, name, labels[name])
	}
	return clashes
}

// evolve moves every value of c one push forward: counters grow by a random
// non-negative amount, gauges walk, histograms and summaries observe new
// values so that counts, sums of non-negative observations and cumulative
// buckets never go down.
func (t *template) evolve(c *cluster) {
	r := c.rng
	for fi := range t.families {
		for si := range t.families[fi].series {
			s := &t.families[fi].series[si]
			v := c.values[s.slot : s.slot+s.slots()]
			switch s.kind {
			case kindCounter:
				if s.integer {
					v[0] += draw(r, s.scale)
				} else {
					v[0] += 2 * s.scale * r.Float64()
				}
			case kindGauge:
				v[0] = t.walk(r, s, v[0])
			case kindHistogram:
				cum := 0.0
				for i := range s.bounds {
					cum += draw(r, s.rates[i])
					v[2+i] += cum
				}
				n := cum + draw(r, s.rates[len(s.bounds)])
				v[0] += n
				v[1] += n * s.mean * (0.5 + r.Float64())
			case kindSummary:
				n := draw(r, s.rate)
				v[0] += n
				v[1] += n * s.mean * (0.5 + r.Float64())
				q := v[2:]
				for i := range q {
					q[i] += r.NormFloat64() * max(math.Abs(q[i]), 1e-3) / 100
				}
				slices.Sort(q) // quantiles stay in order
			}
		}
	}
}

// walk is one step of a gauge. Whole-number gauges (states, counts, sizes)
// change on one push in twenty, by a step of their scale; others move by a
// normal step of 1 % of the template value. A gauge that started
// non-negative stays so.
func (t *template) walk(r *rand.Rand, s *series, v float64) float64 {
	if s.integer {
		if r.IntN(20) != 0 {
			return v
		}
		step := math.Round(s.scale)
		if r.IntN(2) == 0 {
			step = -step
		}
		v += step
	} else {
		v += r.NormFloat64() * s.scale
	}
	if v < 0 && t.initial[s.slot] >= 0 {
		v = -v
	}
	return v
}

// draw returns a random whole number with the given mean, at most twice it.
func draw(r *rand.Rand, mean float64) float64 {
	x := 2 * mean * r.Float64()
	n := math.Floor(x)
	if r.Float64() < x-n {
		n++
	}
	return n
}

// appendPayload appends c's payload as delimited MetricFamily messages,
// stamped with ts (milliseconds). Labels come pre-encoded from the
// template; only values, timestamps and lengths are encoded here. fam and
// val are scratch buffers kept between calls.
func (t *template) appendPayload(dst []byte, c *cluster, ts int64, fam, val *[]byte) []byte {
	clusterLabels := len(c.idLabel) + len(c.extra)
	tsSize := protowire.SizeTag(fieldTimestamp) + protowire.SizeVarint(uint64(ts))
	for fi := range t.families {
		f := &t.families[fi]
		fb := (*fam)[:0]
		fb = append(fb, f.header...)
		for si := range f.series {
			s := &f.series[si]
			vb := appendValue((*val)[:0], s, c.values[s.slot:s.slot+s.slots()])
			*val = vb
			size := len(s.before) + len(s.after) + clusterLabels +
				protowire.SizeTag(s.field) + protowire.SizeBytes(len(vb)) + tsSize
			fb = protowire.AppendTag(fb, fieldMetric, protowire.BytesType)
			fb = protowire.AppendVarint(fb, uint64(size))
			fb = append(fb, s.before...)
			fb = append(fb, c.idLabel...)
			fb = append(fb, s.after...)
			fb = append(fb, c.extra...)
			// Fields in number order, as protobuf marshalers write them:
			// the histogram (7) comes after the timestamp (6).
			if s.field < fieldTimestamp {
				fb = appendBytesField(fb, s.field, vb)
			}
			fb = protowire.AppendTag(fb, fieldTimestamp, protowire.VarintType)
			fb = protowire.AppendVarint(fb, uint64(ts))
			if s.field > fieldTimestamp {
				fb = appendBytesField(fb, s.field, vb)
			}
		}
		*fam = fb
		dst = protowire.AppendVarint(dst, uint64(len(fb)))
		dst = append(dst, fb...)
	}
	return dst
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendDouble(b []byte, num protowire.Number, v float64) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

// appendValue appends the value message (Gauge, Counter, Untyped, Summary
// or Histogram) of a series with values v.
func appendValue(b []byte, s *series, v []float64) []byte {
	switch s.kind {
	case kindHistogram:
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v[0]))
		b = appendDouble(b, 2, v[1])
		for i, bound := range s.bounds {
			count := uint64(v[2+i])
			b = protowire.AppendTag(b, 3, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(protowire.SizeTag(1)+protowire.SizeVarint(count)+protowire.SizeTag(2)+8))
			b = protowire.AppendTag(b, 1, protowire.VarintType)
			b = protowire.AppendVarint(b, count)
			b = appendDouble(b, 2, bound)
		}
	case kindSummary:
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v[0]))
		b = appendDouble(b, 2, v[1])
		for i, q := range s.quantiles {
			b = protowire.AppendTag(b, 3, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(2*(protowire.SizeTag(1)+8)))
			b = appendDouble(b, 1, q)
			b = appendDouble(b, 2, v[2+i])
		}
	default:
		b = appendDouble(b, 1, v[0])
	}
	return b
}

// encoder turns a cluster's values into an upload body. It is not safe for
// concurrent use: each pusher has its own.
type encoder struct {
	raw, fam, val []byte
	block         []byte // remote write: the snappy block
	body          bytes.Buffer
	sw            *s2.Writer
}

func newEncoder() *encoder {
	return &encoder{sw: s2.NewWriter(nil, s2.WriterSnappyCompat(), s2.WriterConcurrency(1))}
}

// encode returns c's body stamped with ts: a snappy framed stream of
// delimited protobuf. The bytes are valid until the next call.
func (e *encoder) encode(t *template, c *cluster, ts int64) ([]byte, error) {
	e.raw = t.appendPayload(e.raw[:0], c, ts, &e.fam, &e.val)
	e.body.Reset()
	e.sw.Reset(&e.body)
	if _, err := e.sw.Write(e.raw); err != nil {
		return nil, fmt.Errorf("compress body: %w", err)
	}
	if err := e.sw.Close(); err != nil {
		return nil, fmt.Errorf("compress body: %w", err)
	}
	return e.body.Bytes(), nil
}
