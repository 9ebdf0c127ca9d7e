package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"time"
	"unique"

	"github.com/klauspost/compress/s2"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

// The snapshot file format, version 1. docs/storage-format.md describes it
// byte by byte; keep the two in step.
const (
	fileMagic      = "TLMS"
	fileVersion    = 1
	headerSize     = 32 // fixed part of the header, before the cluster ID
	entrySize      = 32 // fixed part of a family table entry, before name and help
	trailerSize    = 4  // CRC32C of everything before it
	minFileSize    = headerSize + 1 + trailerSize
	flagHelp       = 1 // family entry flag: the family has a HELP text (possibly empty)
	maxIDLength    = math.MaxUint16
	maxNameLength  = math.MaxUint16
	maxBlockLength = math.MaxUint32
	// maxRatio bounds a block's decoded length by its compressed length. A
	// snappy block cannot expand by more than 64/3 (a 3-byte copy of 64
	// bytes), so a larger claim is corrupt and is refused before allocating.
	maxRatio = 22
)

// Snapshot metric fields used while scanning blocks.
const (
	familyMetricField protowire.Number = 4 // MetricFamily.metric
	metricLabel       protowire.Number = 1 // Metric.label
	metricTimestamp   protowire.Number = 6 // Metric.timestamp_ms
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error about a snapshot file that fails its
// checksum or its structural checks. It wraps upload.ErrInvalid, so a peer
// that sends such bytes gets a 400.
var ErrCorrupt = fmt.Errorf("corrupt snapshot: %w", upload.ErrInvalid)

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// timeFromNanos and timeFromMillis build the times the index holds, so that a
// Meta built by Put and the Meta recovered from the file are identical.
func timeFromNanos(ns int64) time.Time { return time.Unix(0, ns) }

func nanosFitMillis(ms int64) bool {
	return ms <= math.MaxInt64/int64(time.Millisecond) && ms >= math.MinInt64/int64(time.Millisecond)
}

// prepareFamilies returns families sorted by name without empty families,
// merging families that share a name and a type. It never modifies its input.
func prepareFamilies(families []*dto.MetricFamily) ([]*dto.MetricFamily, error) {
	out := make([]*dto.MetricFamily, 0, len(families))
	for _, mf := range families {
		if mf == nil || len(mf.GetMetric()) == 0 {
			continue
		}
		out = append(out, mf)
	}
	slices.SortStableFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	merged := out[:0]
	for _, mf := range out {
		if n := len(merged); n > 0 && merged[n-1].GetName() == mf.GetName() {
			prev := merged[n-1]
			if prev.GetType() != mf.GetType() {
				return nil, upload.Errorf(upload.ErrInvalid, "metric %s has types %s and %s", mf.GetName(), prev.GetType(), mf.GetType())
			}
			help := prev.Help
			if help == nil {
				help = mf.Help
			}
			metrics := make([]*dto.Metric, 0, len(prev.Metric)+len(mf.Metric))
			metrics = append(append(metrics, prev.Metric...), mf.Metric...)
			merged[n-1] = &dto.MetricFamily{Name: prev.Name, Help: help, Type: prev.Type, Metric: metrics}
			continue
		}
		merged = append(merged, mf)
	}
	return merged, nil
}

// part is one family of a snapshot being encoded: metrics to encode, or a
// family already encoded.
type part struct {
	name, help string
	hasHelp    bool
	typ        dto.MetricType
	metrics    []*dto.Metric
	enc        *upload.EncodedFamily
}

// partsOf merges families (prepared) and encoded, both sorted by name, into
// one list sorted by name. A name in both is refused: the caller merges
// families that share a name before encoding them.
func partsOf(families []*dto.MetricFamily, encoded []upload.EncodedFamily) ([]part, error) {
	parts := make([]part, 0, len(families)+len(encoded))
	i := 0
	for j := range encoded {
		e := &encoded[j]
		if j > 0 && encoded[j-1].Name >= e.Name {
			return nil, upload.Errorf(upload.ErrInvalid, "encoded families out of order at %s", e.Name)
		}
		for ; i < len(families) && families[i].GetName() < e.Name; i++ {
			parts = append(parts, familyPart(families[i]))
		}
		if i < len(families) && families[i].GetName() == e.Name {
			return nil, upload.Errorf(upload.ErrInvalid, "metric %s given twice", e.Name)
		}
		if e.Series == 0 {
			continue
		}
		parts = append(parts, part{name: e.Name, help: e.Help, hasHelp: e.HasHelp, typ: e.Type, enc: e})
	}
	for ; i < len(families); i++ {
		parts = append(parts, familyPart(families[i]))
	}
	return parts, nil
}

func familyPart(mf *dto.MetricFamily) part {
	return part{name: mf.GetName(), help: mf.GetHelp(), hasHelp: mf.Help != nil, typ: mf.GetType(), metrics: mf.Metric}
}

// familyMeta describes the block of part p at offset in the file.
func familyMeta(p part, offset int, block []byte, decoded, series int) FamilyMeta {
	return FamilyMeta{
		Name:    intern(p.name),
		Help:    intern(p.help),
		Type:    p.typ,
		Offset:  int64(offset),
		Length:  int64(len(block)),
		Series:  series,
		hasHelp: p.hasHelp,
		decoded: uint32(decoded),
		crc:     crc32.Checksum(block, castagnoli),
	}
}

// encodeSnapshot appends the file for one snapshot to dst and returns it with
// the snapshot's Meta. raw is scratch space for protobuf encoding. Families
// already encoded (sorted by name, none sharing a name with families) are
// written as they are.
func encodeSnapshot(dst, raw []byte, clusterID string, received time.Time, families []*dto.MetricFamily, encoded []upload.EncodedFamily) (file, scratch []byte, m Meta, err error) {
	if clusterID == "" || len(clusterID) > maxIDLength {
		return dst, raw, Meta{}, upload.Errorf(upload.ErrInvalid, "cluster id of %d bytes", len(clusterID))
	}
	fams, err := prepareFamilies(families)
	if err != nil {
		return dst, raw, Meta{}, err
	}
	parts, err := partsOf(fams, encoded)
	if err != nil {
		return dst, raw, Meta{}, err
	}
	tableEnd := headerSize + len(clusterID)
	for _, p := range parts {
		if len(p.name) == 0 || len(p.name) > maxNameLength {
			return dst, raw, Meta{}, upload.Errorf(upload.ErrInvalid, "metric name of %d bytes", len(p.name))
		}
		if int64(len(p.help)) > math.MaxUint32 {
			return dst, raw, Meta{}, upload.Errorf(upload.ErrInvalid, "metric %s: help of %d bytes", p.name, len(p.help))
		}
		if _, ok := dto.MetricType_name[int32(p.typ)]; !ok {
			return dst, raw, Meta{}, upload.Errorf(upload.ErrInvalid, "metric %s: unknown type %d", p.name, p.typ)
		}
		tableEnd += entrySize + len(p.name) + len(p.help)
	}

	base := len(dst)
	dst = slices.Grow(dst, tableEnd)
	dst = dst[:base+tableEnd]
	m = Meta{
		ClusterID: intern(clusterID),
		Received:  timeFromNanos(received.UnixNano()),
		Families:  make([]FamilyMeta, 0, len(parts)),
	}
	var (
		newest int64
		hasTS  bool
	)
	observe := func(name string, ts int64) error {
		if !nanosFitMillis(ts) {
			return upload.Errorf(upload.ErrInvalid, "metric %s: timestamp %d out of range", name, ts)
		}
		if !hasTS || ts > newest {
			newest, hasTS = ts, true
		}
		return nil
	}
	for _, p := range parts {
		start := len(dst)
		if e := p.enc; e != nil {
			if e.HasTimestamp {
				if err := observe(p.name, e.Newest); err != nil {
					return dst[:base], raw, Meta{}, err
				}
			}
			if e.Decoded > maxBlockLength || e.Decoded > len(e.Block)*maxRatio {
				return dst[:base], raw, Meta{}, upload.Errorf(upload.ErrTooLarge, "metric %s: %d encoded bytes", p.name, e.Decoded)
			}
			dst = append(dst, e.Block...)
			m.Families = append(m.Families, familyMeta(p, start-base, dst[start:], e.Decoded, e.Series))
			m.Series += e.Series
			continue
		}
		for _, metric := range p.metrics {
			if metric == nil {
				return dst[:base], raw, Meta{}, upload.Errorf(upload.ErrInvalid, "metric %s: nil series", p.name)
			}
			if metric.TimestampMs == nil {
				continue
			}
			if err := observe(p.name, metric.GetTimestampMs()); err != nil {
				return dst[:base], raw, Meta{}, err
			}
		}
		raw, err = upload.AppendMetrics(raw[:0], p.metrics)
		if err != nil {
			return dst[:base], raw, Meta{}, upload.Errorf(upload.ErrInvalid, "encode metric %s: %v", p.name, err)
		}
		if len(raw) > maxBlockLength || s2.MaxEncodedLen(len(raw)) < 0 {
			return dst[:base], raw, Meta{}, upload.Errorf(upload.ErrTooLarge, "metric %s: %d encoded bytes", p.name, len(raw))
		}
		dst = slices.Grow(dst, s2.MaxEncodedLen(len(raw)))
		compressed := s2.EncodeSnappy(dst[start:cap(dst)], raw)
		dst = dst[:start+len(compressed)]
		m.Families = append(m.Families, familyMeta(p, start-base, compressed, len(raw), len(p.metrics)))
		m.Series += len(p.metrics)
	}
	if m.Series > math.MaxUint32 || len(m.Families) > math.MaxUint32 {
		return dst[:base], raw, Meta{}, upload.Errorf(upload.ErrTooLarge, "%d series in %d families", m.Series, len(m.Families))
	}
	m.DataTime = m.Received
	if hasTS {
		m.DataTime = timeFromNanos(newest * int64(time.Millisecond))
	}

	// Header and family table, now that every block's place is known.
	h := dst[base:]
	copy(h[0:4], fileMagic)
	h[4] = fileVersion
	h[5] = 0
	binary.LittleEndian.PutUint16(h[6:8], uint16(len(clusterID)))
	binary.LittleEndian.PutUint64(h[8:16], uint64(m.Received.UnixNano()))
	binary.LittleEndian.PutUint64(h[16:24], uint64(m.DataTime.UnixNano()))
	binary.LittleEndian.PutUint32(h[24:28], uint32(m.Series))
	binary.LittleEndian.PutUint32(h[28:32], uint32(len(m.Families)))
	p := headerSize + copy(h[headerSize:], clusterID)
	for _, f := range m.Families {
		e := h[p : p+entrySize]
		e[0] = byte(f.Type)
		e[1] = 0
		if f.hasHelp {
			e[1] = flagHelp
		}
		binary.LittleEndian.PutUint16(e[2:4], uint16(len(f.Name)))
		binary.LittleEndian.PutUint32(e[4:8], uint32(len(f.Help)))
		binary.LittleEndian.PutUint32(e[8:12], uint32(f.Series))
		binary.LittleEndian.PutUint64(e[12:20], uint64(f.Offset))
		binary.LittleEndian.PutUint32(e[20:24], uint32(f.Length))
		binary.LittleEndian.PutUint32(e[24:28], f.decoded)
		binary.LittleEndian.PutUint32(e[28:32], f.crc)
		p += entrySize
		p += copy(h[p:], f.Name)
		p += copy(h[p:], f.Help)
	}
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[base:], castagnoli))
	m.Bytes = int64(len(dst) - base)
	return dst, raw, m, nil
}

// parseSnapshot checks a file's checksum and structure and returns its Meta.
// It reads no block beyond the snappy length header, so it is cheap enough to
// run on every file at start-up. Every length is checked against the bytes
// that remain before it is used or allocated for.
func parseSnapshot(data []byte) (Meta, error) {
	if len(data) < minFileSize {
		return Meta{}, corruptf("file of %d bytes is shorter than %d", len(data), minFileSize)
	}
	body := data[:len(data)-trailerSize]
	if want, got := binary.LittleEndian.Uint32(data[len(body):]), crc32.Checksum(body, castagnoli); want != got {
		return Meta{}, corruptf("checksum %08x, trailer says %08x", got, want)
	}
	if string(body[0:4]) != fileMagic {
		return Meta{}, corruptf("bad magic %q", body[0:4])
	}
	if body[4] != fileVersion {
		return Meta{}, corruptf("unknown version %d", body[4])
	}
	if body[5] != 0 {
		return Meta{}, corruptf("unknown header flags %#x", body[5])
	}
	idLen := int(binary.LittleEndian.Uint16(body[6:8]))
	received := int64(binary.LittleEndian.Uint64(body[8:16]))
	dataTime := int64(binary.LittleEndian.Uint64(body[16:24]))
	series := binary.LittleEndian.Uint32(body[24:28])
	count := binary.LittleEndian.Uint32(body[28:32])
	if idLen == 0 || headerSize+idLen > len(body) {
		return Meta{}, corruptf("cluster id of %d bytes in a file of %d", idLen, len(data))
	}
	p := headerSize + idLen
	if uint64(count) > uint64(len(body)-p)/entrySize {
		return Meta{}, corruptf("%d families do not fit in %d bytes", count, len(body)-p)
	}
	m := Meta{
		ClusterID: intern(string(body[headerSize:p])),
		Received:  timeFromNanos(received),
		DataTime:  timeFromNanos(dataTime),
		Series:    int(series),
		Bytes:     int64(len(data)),
		Families:  make([]FamilyMeta, count),
	}
	// First pass: the table, which ends where the first block starts.
	var (
		seriesSum uint64
		prevName  []byte
	)
	for i := range m.Families {
		if len(body)-p < entrySize {
			return Meta{}, corruptf("family table entry %d truncated", i)
		}
		e := body[p : p+entrySize]
		p += entrySize
		typ := dto.MetricType(e[0])
		if _, ok := dto.MetricType_name[int32(typ)]; !ok {
			return Meta{}, corruptf("family %d: unknown type %d", i, e[0])
		}
		flags := e[1]
		nameLen := int(binary.LittleEndian.Uint16(e[2:4]))
		helpLen := uint64(binary.LittleEndian.Uint32(e[4:8]))
		if flags&^flagHelp != 0 || (flags&flagHelp == 0 && helpLen != 0) {
			return Meta{}, corruptf("family %d: bad flags %#x", i, flags)
		}
		if nameLen == 0 || uint64(nameLen)+helpLen > uint64(len(body)-p) {
			return Meta{}, corruptf("family %d: name and help of %d bytes exceed the file", i, uint64(nameLen)+helpLen)
		}
		name := body[p : p+nameLen]
		p += nameLen
		help := body[p : p+int(helpLen)]
		p += int(helpLen)
		if i > 0 && bytes.Compare(prevName, name) >= 0 {
			return Meta{}, corruptf("family %d: names out of order", i)
		}
		prevName = name
		f := FamilyMeta{
			Name:    intern(string(name)),
			Help:    intern(string(help)),
			Type:    typ,
			Offset:  int64(binary.LittleEndian.Uint64(e[12:20])),
			Length:  int64(binary.LittleEndian.Uint32(e[20:24])),
			Series:  int(binary.LittleEndian.Uint32(e[8:12])),
			hasHelp: flags&flagHelp != 0,
			decoded: binary.LittleEndian.Uint32(e[24:28]),
			crc:     binary.LittleEndian.Uint32(e[28:32]),
		}
		if f.Series == 0 {
			return Meta{}, corruptf("family %d: no series", i)
		}
		seriesSum += uint64(f.Series)
		m.Families[i] = f
	}
	if seriesSum != uint64(series) {
		return Meta{}, corruptf("families hold %d series, header says %d", seriesSum, series)
	}
	// Second pass: blocks follow the table back to back, in table order.
	for i, f := range m.Families {
		if f.Offset != int64(p) {
			return Meta{}, corruptf("family %d: block at %d, expected %d", i, f.Offset, p)
		}
		if f.Length == 0 || f.Length > int64(len(body)-p) {
			return Meta{}, corruptf("family %d: block of %d bytes exceeds the file", i, f.Length)
		}
		if int64(f.decoded) > f.Length*maxRatio {
			return Meta{}, corruptf("family %d: %d compressed bytes cannot decode to %d", i, f.Length, f.decoded)
		}
		n, err := s2.DecodedLen(body[p : p+int(f.Length)])
		if err != nil || int64(n) != int64(f.decoded) {
			return Meta{}, corruptf("family %d: block header does not match the table", i)
		}
		p += int(f.Length)
	}
	if p != len(body) {
		return Meta{}, corruptf("%d bytes after the last block", len(body)-p)
	}
	return m, nil
}

// blockOf returns the compressed block of family f in a parsed file.
func blockOf(data []byte, f FamilyMeta) []byte { return data[f.Offset : f.Offset+f.Length] }

// decodeBlock checks a compressed block against its table entry and
// decompresses it into dst, reusing dst's capacity.
func decodeBlock(dst, block []byte, f FamilyMeta) ([]byte, error) {
	if int64(len(block)) != f.Length || crc32.Checksum(block, castagnoli) != f.crc {
		return nil, corruptf("family %s: block checksum mismatch", f.Name)
	}
	n, err := s2.DecodedLen(block)
	if err != nil || int64(n) != int64(f.decoded) || int64(f.decoded) > f.Length*maxRatio {
		return nil, corruptf("family %s: block length does not match the table", f.Name)
	}
	out, err := s2.Decode(dst[:cap(dst)], block)
	if err != nil {
		return nil, corruptf("family %s: decompress block: %v", f.Name, err)
	}
	return out, nil
}

// scanBlock walks the metric entries of a decoded block without building
// objects: it checks the wire structure, counts series and finds the newest
// sample timestamp.
func scanBlock(b []byte) (series int, newest int64, hasTS bool, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != familyMetricField || typ != protowire.BytesType {
			return 0, 0, false, errors.New("expected a metric entry")
		}
		b = b[n:]
		msg, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, 0, false, errors.New("truncated metric entry")
		}
		b = b[n:]
		series++
		for len(msg) > 0 {
			num, typ, n := protowire.ConsumeTag(msg)
			if n < 0 {
				return 0, 0, false, errors.New("bad field tag in metric")
			}
			msg = msg[n:]
			if num == metricTimestamp && typ == protowire.VarintType {
				v, n := protowire.ConsumeVarint(msg)
				if n < 0 {
					return 0, 0, false, errors.New("bad timestamp")
				}
				msg = msg[n:]
				if ts := int64(v); !hasTS || ts > newest {
					newest, hasTS = ts, true
				}
				continue
			}
			n = protowire.ConsumeFieldValue(num, typ, msg)
			if n < 0 {
				return 0, 0, false, errors.New("bad field in metric")
			}
			msg = msg[n:]
		}
	}
	return series, newest, hasTS, nil
}

// everySeriesCarries reports whether every metric entry of a decoded block
// has the label name=value. The block passed scanBlock.
func everySeriesCarries(b []byte, name, value string) bool {
	for len(b) > 0 {
		_, _, n := protowire.ConsumeTag(b)
		msg, m := protowire.ConsumeBytes(b[n:])
		b = b[n+m:]
		found := false
		for len(msg) > 0 && !found {
			num, typ, n := protowire.ConsumeTag(msg)
			if n < 0 {
				return false
			}
			msg = msg[n:]
			if num != metricLabel || typ != protowire.BytesType {
				if n = protowire.ConsumeFieldValue(num, typ, msg); n < 0 {
					return false
				}
				msg = msg[n:]
				continue
			}
			pair, n := protowire.ConsumeBytes(msg)
			if n < 0 {
				return false
			}
			msg = msg[n:]
			var ln, lv []byte
			for len(pair) > 0 {
				pnum, ptyp, pn := protowire.ConsumeTag(pair)
				if pn < 0 || ptyp != protowire.BytesType {
					return false
				}
				v, vn := protowire.ConsumeBytes(pair[pn:])
				if vn < 0 {
					return false
				}
				pair = pair[pn+vn:]
				switch pnum {
				case 1:
					ln = v
				case 2:
					lv = v
				}
			}
			if string(ln) == name {
				if string(lv) != value {
					return false
				}
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// verifySnapshot parses a file and also decompresses and scans every block:
// series counts and the data time must match what the header and the table
// claim. It is what untrusted bytes from a peer go through. scratch is reused
// for the decoded blocks, one at a time. A non-empty identityLabel must be
// on every series, with the snapshot's cluster ID as its value.
func verifySnapshot(data, scratch []byte, identityLabel string) (Meta, []byte, error) {
	m, err := parseSnapshot(data)
	if err != nil {
		return Meta{}, scratch, err
	}
	var (
		newest int64
		hasTS  bool
	)
	for _, f := range m.Families {
		scratch, err = decodeBlock(scratch, blockOf(data, f), f)
		if err != nil {
			return Meta{}, scratch, err
		}
		series, ts, ok, err := scanBlock(scratch)
		if err != nil {
			return Meta{}, scratch, corruptf("family %s: %v", f.Name, err)
		}
		if series != f.Series {
			return Meta{}, scratch, corruptf("family %s: %d series, table says %d", f.Name, series, f.Series)
		}
		if identityLabel != "" && !everySeriesCarries(scratch, identityLabel, m.ClusterID) {
			return Meta{}, scratch, corruptf("family %s: a series lacks %s=%q", f.Name, identityLabel, m.ClusterID)
		}
		if ok && (!hasTS || ts > newest) {
			newest, hasTS = ts, true
		}
	}
	want := m.Received
	if hasTS {
		if !nanosFitMillis(newest) {
			return Meta{}, scratch, corruptf("timestamp %d out of range", newest)
		}
		want = timeFromNanos(newest * int64(time.Millisecond))
	}
	if !want.Equal(m.DataTime) {
		return Meta{}, scratch, corruptf("data time %d, samples say %d", m.DataTime.UnixNano(), want.UnixNano())
	}
	return m, scratch, nil
}

// decodeFamilies builds the families of a parsed file.
func decodeFamilies(data []byte, m Meta) ([]*dto.MetricFamily, error) {
	out := make([]*dto.MetricFamily, 0, len(m.Families))
	var scratch []byte
	for _, f := range m.Families {
		var err error
		scratch, err = decodeBlock(scratch, blockOf(data, f), f)
		if err != nil {
			return nil, err
		}
		mf := &dto.MetricFamily{}
		if err := proto.Unmarshal(scratch, mf); err != nil {
			return nil, corruptf("family %s: unmarshal: %v", f.Name, err)
		}
		if len(mf.Metric) != f.Series {
			return nil, corruptf("family %s: %d series, table says %d", f.Name, len(mf.Metric), f.Series)
		}
		// The block holds only field 4; anything else is not ours.
		if mf.Name != nil || mf.Help != nil || mf.Type != nil || mf.Unit != nil {
			return nil, corruptf("family %s: block holds more than series", f.Name)
		}
		mf.Name = proto.String(f.Name)
		if f.hasHelp {
			mf.Help = proto.String(f.Help)
		}
		mf.Type = f.Type.Enum()
		out = append(out, mf)
	}
	return out, nil
}
