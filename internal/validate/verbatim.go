package validate

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/klauspost/compress/s2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

// Verbatim takes the family messages of one upload that are already in the
// form Validate would give them, so that they reach the store as they came:
// not decoded into objects, not rewritten, not encoded again. The client
// sends its counter, gauge and untyped families that way (it sets the
// partition label and sorts labels and series).
//
// A family is taken only when Validate would keep it unchanged: a counter,
// gauge or untyped family with a legal name and help; every metric encoded
// exactly as upload.AppendMetrics writes it (one-byte tags, minimal
// varints, label pairs with name and value, one value of the family's type,
// an optional timestamp); labels legal, sorted and unique, carrying the
// identity and --label labels with their values, any --required-label, no
// label --elide-label removes; timestamps inside the window; every series
// allowed; series sorted and unique; families sorted by name; the series
// budget not exceeded. Anything else is declined and decoded as before, so a
// declined family costs one extra walk over its bytes.
// FuzzVerbatimMatchesValidate holds the two paths to the same snapshot.
type Verbatim struct {
	v         *Validator
	clusterID string
	identity  map[string]string
	l         upload.Limits
	want      []labelWant // sorted by name
	minTS     int64
	maxTS     int64
	off       bool

	buf     *[]byte // the taken families' blocks, one after another
	scratch *[]byte // one family's copied metrics, then its compressed block
	taken   []takenFamily
	series  int
	// order records every message offered: the index of the family taken,
	// or -1. declined holds the names of the others; unknown is set when a
	// declined message's name could not be read.
	order    []int
	declined []string
	unknown  bool
}

type labelWant struct{ name, value string }

type takenFamily struct {
	name, help   string
	hasHelp      bool
	typ          dto.MetricType
	start, end   int // of its block in buf
	decoded      int // length of its metrics' protobuf
	series       int
	newest       int64
	hasTimestamp bool
}

// verbatimBufs recycles the buffers that hold taken families between uploads.
var verbatimBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBuf is the largest buffer kept for reuse.
const maxPooledBuf = 4 << 20

// Verbatim returns the taker for one upload of cluster clusterID, whose
// token carries identity, decoded under l. Pass its Take to
// upload.DecodeTaking, then call Finish with what was decoded, and Release
// once the snapshot is stored.
func (v *Validator) Verbatim(clusterID string, identity map[string]string, l upload.Limits) *Verbatim {
	now := v.o.Now()
	t := &Verbatim{
		v:         v,
		clusterID: clusterID,
		identity:  identity,
		l:         l.WithDefaults(),
		minTS:     now.Add(-v.o.MaxAge).UnixMilli(),
		maxTS:     now.Add(v.o.MaxFuture).UnixMilli(),
	}
	add := func(name, value string) {
		for _, w := range t.want {
			if w.name == name && w.value != value {
				// Validate would refuse, or rewrite the value: decode.
				t.off = true
			}
		}
		t.want = append(t.want, labelWant{name, value})
	}
	add(v.o.PartitionLabel, clusterID)
	for k, val := range identity {
		add(k, val)
	}
	for k, val := range v.o.Labels {
		add(k, val)
	}
	slices.SortFunc(t.want, func(a, b labelWant) int { return strings.Compare(a.name, b.name) })
	t.want = slices.CompactFunc(t.want, func(a, b labelWant) bool { return a.name == b.name })
	if !t.off {
		t.buf = verbatimBufs.Get().(*[]byte)
		*t.buf = (*t.buf)[:0]
		t.scratch = verbatimBufs.Get().(*[]byte)
	}
	return t
}

// Take reports whether it took the family message msg (see Verbatim). It
// copies what it keeps.
func (t *Verbatim) Take(msg []byte) bool {
	if t.off {
		return false
	}
	start := len(*t.buf)
	f, ok := t.family(msg)
	if !ok {
		*t.buf = (*t.buf)[:start]
		name, found := familyName(msg)
		t.unknown = t.unknown || !found
		t.declined = append(t.declined, name)
		t.order = append(t.order, -1)
		return false
	}
	f.start, f.end = start, len(*t.buf)
	t.series += f.series
	t.order = append(t.order, len(t.taken))
	t.taken = append(t.taken, f)
	return true
}

// Release returns the buffers holding the taken families; the families
// Finish returned must not be used after it.
func (t *Verbatim) Release() {
	for _, b := range []*[]byte{t.buf, t.scratch} {
		if b != nil && cap(*b) <= maxPooledBuf {
			verbatimBufs.Put(b)
		}
	}
	t.buf, t.scratch = nil, nil
}

// Finish validates families, the ones Take declined in body order, and
// returns what to store: the taken families, encoded, and the rest. A name
// the body gave to more than one family sends every family back through
// Validate in body order, so the result is Validate's.
func (t *Verbatim) Finish(families []*dto.MetricFamily) ([]upload.EncodedFamily, Result, error) {
	if len(t.taken) > 0 && t.collides() {
		all, err := t.rebuild(families)
		if err != nil {
			return nil, Result{}, err
		}
		t.taken = t.taken[:0]
		t.series = 0
		families = all
	}
	res, err := t.v.Validate(t.clusterID, t.identity, families)
	if err != nil {
		return nil, Result{}, err
	}
	if t.v.o.MaxSeries > 0 && res.Series+t.series > t.v.o.MaxSeries {
		return nil, Result{}, upload.Errorf(upload.ErrTooLarge, "more than %d series, the per-cluster budget", t.v.o.MaxSeries)
	}
	if len(t.taken) == 0 {
		return nil, res, nil
	}
	enc := make([]upload.EncodedFamily, len(t.taken))
	for i, f := range t.taken {
		enc[i] = upload.EncodedFamily{
			Name: f.name, Help: f.help, HasHelp: f.hasHelp, Type: f.typ,
			Block: (*t.buf)[f.start:f.end], Decoded: f.decoded,
			Series: f.series, Newest: f.newest, HasTimestamp: f.hasTimestamp,
		}
	}
	res.Series += t.series
	return enc, res, nil
}

// collides reports whether a declined family may share a name with a taken
// one (taken families have names in increasing order).
func (t *Verbatim) collides() bool {
	if t.unknown {
		return true
	}
	for _, name := range t.declined {
		if _, found := slices.BinarySearchFunc(t.taken, name, func(f takenFamily, name string) int { return strings.Compare(f.name, name) }); found {
			return true
		}
	}
	return false
}

// rebuild returns every family of the body in body order: the declined ones
// from families, the taken ones decoded from their bytes.
func (t *Verbatim) rebuild(families []*dto.MetricFamily) ([]*dto.MetricFamily, error) {
	all := make([]*dto.MetricFamily, 0, len(t.order))
	next := 0
	for _, i := range t.order {
		if i < 0 {
			if next >= len(families) {
				return nil, upload.Errorf(upload.ErrInvalid, "%d families decoded for %d messages", len(families), len(t.order))
			}
			all = append(all, families[next])
			next++
			continue
		}
		f := t.taken[i]
		raw, err := s2.Decode(nil, (*t.buf)[f.start:f.end])
		if err != nil {
			return nil, upload.Errorf(upload.ErrInvalid, "decode taken family %s: %v", f.name, err)
		}
		mf := &dto.MetricFamily{}
		if err := proto.Unmarshal(raw, mf); err != nil {
			return nil, upload.Errorf(upload.ErrInvalid, "decode taken family %s: %v", f.name, err)
		}
		name, typ := f.name, f.typ
		mf.Name, mf.Type = &name, &typ
		if f.hasHelp {
			help := f.help
			mf.Help = &help
		}
		all = append(all, mf)
	}
	return append(all, families[next:]...), nil
}

// Tags of the fields the verbatim path accepts: every one is one byte.
const (
	tagFamilyName   = 1<<3 | 2 // MetricFamily.name
	tagFamilyHelp   = 2<<3 | 2
	tagFamilyType   = 3 << 3 // wire type 0, a varint
	tagFamilyMetric = 4<<3 | 2
	tagMetricLabel  = 1<<3 | 2 // Metric.label
	tagMetricGauge  = 2<<3 | 2
	tagMetricCount  = 3<<3 | 2
	tagMetricUntype = 5<<3 | 2
	tagMetricTS     = 6 << 3
	tagPairName     = 1<<3 | 2 // LabelPair.name
	tagPairValue    = 2<<3 | 2
	tagValue        = 1<<3 | 1 // Gauge.value and the like, a double
)

// familyName returns the name field of a MetricFamily message, if it has
// exactly one that can be read.
func familyName(b []byte) (string, bool) {
	var (
		name  string
		found bool
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || found {
				return "", false
			}
			name, found = string(v), true
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return "", false
		}
		b = b[n:]
	}
	return name, found
}

// family checks one family message and appends its metrics to buf.
func (t *Verbatim) family(b []byte) (takenFamily, bool) {
	var (
		f                takenFamily
		name, help       []byte
		hasName, hasType bool
		typ              uint64
		metrics          int
		first, rest      = b, b
		valueTag         byte
		prevPair         []byte
	)
	// The family's own fields first: the type may follow the metrics.
	for len(rest) > 0 {
		tag := rest[0]
		rest = rest[1:]
		var n int
		switch tag {
		case tagFamilyName, tagFamilyHelp, tagFamilyMetric:
			var v []byte
			v, n = protowire.ConsumeBytes(rest)
			switch {
			case n < 0:
				return f, false
			case tag == tagFamilyName:
				if hasName {
					return f, false
				}
				name, hasName = v, true
			case tag == tagFamilyHelp:
				if f.hasHelp {
					return f, false
				}
				help, f.hasHelp = v, true
			default:
				metrics++
			}
		case tagFamilyType:
			if hasType {
				return f, false
			}
			typ, n = protowire.ConsumeVarint(rest)
			hasType = true
		default:
			return f, false
		}
		if n < 0 {
			return f, false
		}
		rest = rest[n:]
	}
	if typ > uint64(dto.MetricType_UNTYPED) {
		return f, false
	}
	switch dto.MetricType(typ) {
	case dto.MetricType_COUNTER:
		valueTag = tagMetricCount
	case dto.MetricType_GAUGE:
		valueTag = tagMetricGauge
	case dto.MetricType_UNTYPED:
		valueTag = tagMetricUntype
	default:
		return f, false
	}
	if metrics == 0 || !validMetricName(name) || len(name) > t.l.NameLength ||
		len(help) > t.l.ValueLength || !utf8.Valid(help) {
		return f, false
	}
	if len(t.taken) > 0 && string(name) <= t.taken[len(t.taken)-1].name {
		return f, false // out of order, or a name given twice: Validate merges
	}
	if t.v.o.MaxSeries > 0 && t.series+metrics > t.v.o.MaxSeries {
		return f, false
	}
	f.typ = dto.MetricType(typ)

	// The block is the metric fields, each with its length in the shortest
	// form. When the message holds them one after another with such
	// lengths (the family's own fields first, as encoders write them), it
	// is a slice of the message; otherwise they are copied.
	var (
		from, to   = -1, -1 // the metric fields' span in the message
		contiguous = true
	)
	for b = first; len(b) > 0; {
		at := len(first) - len(b)
		tag, v, n := nextField(b)
		b = b[n:]
		if tag != tagFamilyMetric {
			continue
		}
		pairs, ts, hasTS, ok := t.metric(v, valueTag)
		if !ok || (prevPair != nil && comparePairs(prevPair, pairs) >= 0) {
			return f, false
		}
		if t.v.o.Allow != nil && !t.allowed(name, pairs) {
			return f, false
		}
		if hasTS && (!f.hasTimestamp || ts > f.newest) {
			f.newest, f.hasTimestamp = ts, true
		}
		if from < 0 {
			from = at
		}
		if (to >= 0 && at != to) || n != 1+protowire.SizeBytes(len(v)) {
			contiguous = false
		}
		to = len(first) - len(b)
		// prevPair points into the message, which outlives this loop.
		prevPair = pairs
		f.series++
	}
	src := first[from:to]
	if !contiguous {
		buf := slices.Grow((*t.scratch)[:0], len(first))
		for b = first; len(b) > 0; {
			tag, v, n := nextField(b)
			b = b[n:]
			if tag == tagFamilyMetric {
				buf = protowire.AppendBytes(append(buf, tagFamilyMetric), v)
			}
		}
		*t.scratch = buf[:0]
		src = buf
	}
	// Compressed at once, so that an upload holds its blocks compressed:
	// into the scratch buffer, which has room for snappy's worst case (or
	// after the copied metrics in it), then appended to the blocks.
	f.decoded = len(src)
	bound := s2.MaxEncodedLen(len(src))
	if bound < 0 {
		return f, false // too large for one block: the store refuses it
	}
	scratch := *t.scratch
	if !contiguous {
		scratch = src[len(src):]
	}
	scratch = slices.Grow(scratch[:0], bound)
	block := s2.EncodeSnappy(scratch[:cap(scratch)], src)
	*t.buf = append(*t.buf, block...)
	if contiguous {
		*t.scratch = scratch[:0]
	}
	f.name = string(name)
	if f.hasHelp {
		f.help = string(help)
	}
	return f, true
}

// nextField splits the first field off a family message whose fields family
// has checked: its one-byte tag, its value (none for the type) and the
// field's length.
func nextField(b []byte) (tag byte, v []byte, n int) {
	tag = b[0]
	if tag == tagFamilyType {
		_, n = protowire.ConsumeVarint(b[1:])
		return tag, nil, 1 + n
	}
	v, n = protowire.ConsumeBytes(b[1:])
	return tag, v, 1 + n
}

// metric checks one Metric message; it returns the bytes of its label pairs
// and its timestamp.
func (t *Verbatim) metric(b []byte, valueTag byte) (pairs []byte, ts int64, hasTS, ok bool) {
	var (
		prevName []byte
		labels   int
		wanted   int // how many of t.want were found, in order
		all      = b
	)
	for len(b) > 0 && b[0] == tagMetricLabel {
		lp, n := consumeMinimal(b[1:])
		if n < 0 {
			return nil, 0, false, false
		}
		name, value, ok := labelPair(lp)
		if !ok || len(name) > t.l.NameLength || len(value) > t.l.ValueLength ||
			!validLabelName(name) || (labels > 0 && bytes.Compare(prevName, name) >= 0) || !utf8.Valid(value) {
			return nil, 0, false, false
		}
		if wanted < len(t.want) && t.want[wanted].name < string(name) {
			return nil, 0, false, false // a wanted label is missing: Validate adds it
		}
		switch {
		case wanted < len(t.want) && t.want[wanted].name == string(name):
			if t.want[wanted].value != string(value) {
				return nil, 0, false, false
			}
			wanted++
		case t.elided(name):
			return nil, 0, false, false
		}
		prevName = name
		labels++
		b = b[1+n:]
	}
	if wanted < len(t.want) || labels > t.l.LabelsPerSeries {
		return nil, 0, false, false
	}
	pairs = all[:len(all)-len(b)]
	for _, req := range t.v.o.RequiredLabels {
		if v, found := lookup(pairs, req); !found || len(v) == 0 {
			return nil, 0, false, false
		}
	}
	// The value: an empty message, or one double.
	switch {
	case len(b) >= 2 && b[0] == valueTag && b[1] == 0:
		b = b[2:]
	case len(b) >= 11 && b[0] == valueTag && b[1] == 9 && b[2] == tagValue:
		b = b[11:]
	default:
		return nil, 0, false, false
	}
	if len(b) > 0 {
		if b[0] != tagMetricTS {
			return nil, 0, false, false
		}
		v, n := protowire.ConsumeVarint(b[1:])
		if n < 0 || n != protowire.SizeVarint(v) {
			return nil, 0, false, false
		}
		ts, hasTS = int64(v), true
		if ts < t.minTS || ts > t.maxTS {
			return nil, 0, false, false
		}
		b = b[1+n:]
	}
	return pairs, ts, hasTS, len(b) == 0
}

// elided reports whether --elide-label names the label (compared without
// converting the name to a string).
func (t *Verbatim) elided(name []byte) bool {
	for _, e := range t.v.o.Elide {
		if e == string(name) {
			return true
		}
	}
	return false
}

// consumeMinimal is protowire.ConsumeBytes that refuses a length not written
// in as few bytes as it could be, which AppendMetrics would not reproduce.
func consumeMinimal(b []byte) ([]byte, int) {
	if len(b) > 0 && b[0] < 0x80 { // a one-byte length, minimal by its nature
		n := 1 + int(b[0])
		if n > len(b) {
			return nil, -1
		}
		return b[1:n], n
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 || n != protowire.SizeBytes(len(v)) {
		return nil, -1
	}
	return v, n
}

// labelPair splits a LabelPair message holding a name and then a value.
func labelPair(b []byte) (name, value []byte, ok bool) {
	if len(b) == 0 || b[0] != tagPairName {
		return nil, nil, false
	}
	name, n := consumeMinimal(b[1:])
	if n < 0 {
		return nil, nil, false
	}
	b = b[1+n:]
	if len(b) == 0 || b[0] != tagPairValue {
		return nil, nil, false
	}
	value, n = consumeMinimal(b[1:])
	if n < 0 || 1+n != len(b) {
		return nil, nil, false
	}
	return name, value, true
}

// eachPair calls fn for the label pairs of a metric that metric checked.
func eachPair(pairs []byte, fn func(name, value []byte) bool) {
	for len(pairs) > 0 {
		lp, n := consumeMinimal(pairs[1:])
		name, value, _ := labelPair(lp)
		if !fn(name, value) {
			return
		}
		pairs = pairs[1+n:]
	}
}

func lookup(pairs []byte, name string) (value []byte, found bool) {
	eachPair(pairs, func(n, v []byte) bool {
		if string(n) == name {
			value, found = v, true
			return false
		}
		return true
	})
	return value, found
}

// comparePairs orders two metrics' checked label pairs as compareMetrics
// orders their labels.
func comparePairs(a, b []byte) int {
	for len(a) > 0 && len(b) > 0 {
		la, na := consumeMinimal(a[1:])
		lb, nb := consumeMinimal(b[1:])
		if bytes.Equal(la, lb) { // the same pair: series share most labels
			a, b = a[1+na:], b[1+nb:]
			continue
		}
		an, av, _ := labelPair(la)
		bn, bv, _ := labelPair(lb)
		if c := bytes.Compare(an, bn); c != 0 {
			return c
		}
		if c := bytes.Compare(av, bv); c != 0 {
			return c
		}
		a, b = a[1+na:], b[1+nb:]
	}
	switch {
	case len(a) > 0:
		return 1
	case len(b) > 0:
		return -1
	}
	return 0
}

// allowed is validate's allowed on checked label pairs. The matchers see
// the bytes as strings only for the call.
func (t *Verbatim) allowed(name, pairs []byte) bool {
next:
	for _, ms := range t.v.o.Allow {
		for _, m := range ms {
			var value []byte
			if m.Name == model.MetricNameLabel {
				value = name
			} else {
				value, _ = lookup(pairs, m.Name)
			}
			if !m.Matches(unsafe.String(unsafe.SliceData(value), len(value))) {
				continue next
			}
		}
		return true
	}
	return false
}

// validMetricName and validLabelName are the legacy (non-UTF-8) rules of
// model.LegacyValidation, on bytes; a label name may not start with "__".
func validMetricName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for i, c := range b {
		if !nameByte(c, i == 0, true) {
			return false
		}
	}
	return true
}

func validLabelName(b []byte) bool {
	if len(b) == 0 || (len(b) >= 2 && b[0] == '_' && b[1] == '_') {
		return false
	}
	for i, c := range b {
		if !nameByte(c, i == 0, false) {
			return false
		}
	}
	return true
}

// nameByte reports whether c may stand in a name: a letter, '_', a digit
// unless first, ':' where colon allows it.
func nameByte(c byte, first, colon bool) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || colon && c == ':' || !first && c >= '0' && c <= '9'
}
