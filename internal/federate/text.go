package federate

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
)

// This file renders series in the text exposition format 0.0.4 straight from
// their protobuf encoding, without building dto objects: the federate output
// of a whole fleet is hundreds of thousands of series per scrape.

type label struct{ name, value []byte }

type quantile struct{ q, v float64 }

type bucket struct {
	upper      float64
	count      uint64
	countFloat float64
}

// sample is one io.prometheus.client.Metric, parsed. Its slices are reused
// from one metric to the next and point into the decoded block.
type sample struct {
	labels []label
	ts     int64
	hasTS  bool

	// which value messages were present: gauge, counter, untyped, summary,
	// histogram (fields 2, 3, 5, 4, 7 of Metric)
	gauge, counter, untyped, summary, histogram bool
	value                                       float64 // of gauge, counter or untyped

	count      uint64  // summary and histogram sample_count
	countFloat float64 // histogram sample_count_float
	sum        float64
	quantiles  []quantile
	buckets    []bucket
}

var errMalformed = errors.New("malformed metric")

func (s *sample) reset() {
	s.labels = s.labels[:0]
	s.quantiles = s.quantiles[:0]
	s.buckets = s.buckets[:0]
	s.ts, s.hasTS = 0, false
	s.gauge, s.counter, s.untyped, s.summary, s.histogram = false, false, false, false, false
	s.value, s.count, s.countFloat, s.sum = 0, 0, 0, 0
}

// fields calls fn for every field of a protobuf message. v is the raw value:
// the payload of a length-delimited field, the 8 bytes of a fixed64, the 4
// of a fixed32, or the varint's bytes.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(b) > 0 {
		var num protowire.Number
		var typ protowire.Type
		if c := b[0]; c < 0x80 { // one-byte tag: field numbers up to 15
			num, typ = protowire.Number(c>>3), protowire.Type(c&7)
			b = b[1:]
		} else {
			var n int
			num, typ, n = protowire.ConsumeTag(b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
		}
		var v []byte
		switch typ {
		case protowire.BytesType:
			l, n := protowire.ConsumeVarint(b)
			if n < 0 || l > uint64(len(b)-n) {
				return errMalformed
			}
			v, b = b[n:n+int(l)], b[n+int(l):]
		case protowire.Fixed64Type:
			if len(b) < 8 {
				return errMalformed
			}
			v, b = b[:8], b[8:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errMalformed
			}
			v, b = b[:n], b[n:]
		}
		if num < protowire.MinValidNumber {
			return errMalformed
		}
		if err := fn(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}

func double(typ protowire.Type, v []byte) (float64, error) {
	if typ != protowire.Fixed64Type {
		return 0, errMalformed
	}
	u, _ := protowire.ConsumeFixed64(v)
	return math.Float64frombits(u), nil
}

func varint(typ protowire.Type, v []byte) (uint64, error) {
	if typ != protowire.VarintType {
		return 0, errMalformed
	}
	u, _ := protowire.ConsumeVarint(v)
	return u, nil
}

// parse reads one Metric message. Fields the text format cannot show
// (exemplars, created timestamps, native histogram buckets) are skipped.
func (s *sample) parse(b []byte) error {
	s.reset()
	return fields(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		var err error
		switch num {
		case 1: // label
			if typ != protowire.BytesType {
				return errMalformed
			}
			var l label
			err = fields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if typ != protowire.BytesType {
					return errMalformed
				}
				switch num {
				case 1:
					l.name = v
				case 2:
					l.value = v
				}
				return nil
			})
			s.labels = append(s.labels, l)
		case 2, 3, 5: // gauge, counter, untyped: value is field 1
			if typ != protowire.BytesType {
				return errMalformed
			}
			switch num {
			case 2:
				s.gauge = true
			case 3:
				s.counter = true
			default:
				s.untyped = true
			}
			err = fields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num == 1 {
					var err error
					s.value, err = double(typ, v)
					return err
				}
				return nil
			})
		case 4:
			if typ != protowire.BytesType {
				return errMalformed
			}
			s.summary = true
			err = fields(v, s.summaryField)
		case 7:
			if typ != protowire.BytesType {
				return errMalformed
			}
			s.histogram = true
			err = fields(v, s.histogramField)
		case 6:
			var u uint64
			u, err = varint(typ, v)
			s.ts, s.hasTS = int64(u), true
		}
		return err
	})
}

func (s *sample) summaryField(num protowire.Number, typ protowire.Type, v []byte) error {
	var err error
	switch num {
	case 1:
		s.count, err = varint(typ, v)
	case 2:
		s.sum, err = double(typ, v)
	case 3:
		if typ != protowire.BytesType {
			return errMalformed
		}
		var q quantile
		err = fields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
			var err error
			switch num {
			case 1:
				q.q, err = double(typ, v)
			case 2:
				q.v, err = double(typ, v)
			}
			return err
		})
		s.quantiles = append(s.quantiles, q)
	}
	return err
}

func (s *sample) histogramField(num protowire.Number, typ protowire.Type, v []byte) error {
	var err error
	switch num {
	case 1:
		s.count, err = varint(typ, v)
	case 4:
		s.countFloat, err = double(typ, v)
	case 2:
		s.sum, err = double(typ, v)
	case 3:
		if typ != protowire.BytesType {
			return errMalformed
		}
		var bk bucket
		err = fields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
			var err error
			switch num {
			case 1:
				bk.count, err = varint(typ, v)
			case 4:
				bk.countFloat, err = double(typ, v)
			case 2:
				bk.upper, err = double(typ, v)
			}
			return err
		})
		s.buckets = append(s.buckets, bk)
	}
	return err
}

// valid reports whether the sample can be written as a series of a family
// of type typ, with the strict text parser accepting it: the value matching
// the type, legal label names, no reserved or generated label names, UTF-8
// label values.
func (s *sample) valid(typ dto.MetricType) bool {
	switch typ {
	case dto.MetricType_COUNTER:
		if !s.counter {
			return false
		}
	case dto.MetricType_GAUGE:
		if !s.gauge {
			return false
		}
	case dto.MetricType_UNTYPED:
		if !s.untyped {
			return false
		}
	case dto.MetricType_SUMMARY:
		if !s.summary {
			return false
		}
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		if !s.histogram {
			return false
		}
	default:
		return false
	}
	hist := typ == dto.MetricType_HISTOGRAM || typ == dto.MetricType_GAUGE_HISTOGRAM
	for i, l := range s.labels {
		if !validLabelName(l.name) || !utf8.Valid(l.value) {
			return false
		}
		if (typ == dto.MetricType_SUMMARY && string(l.name) == "quantile") || (hist && string(l.name) == "le") {
			return false
		}
		for _, p := range s.labels[:i] {
			if bytes.Equal(p.name, l.name) {
				return false
			}
		}
	}
	return true
}

// validMetricName and validLabelName are the legacy Prometheus name rules:
// [a-zA-Z_:][a-zA-Z0-9_:]* and [a-zA-Z_][a-zA-Z0-9_]*, labels not starting
// with the reserved "__".
func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && c != ':' && (i == 0 || !isDigit(c)) {
			return false
		}
	}
	return true
}

func validLabelName(b []byte) bool {
	if len(b) == 0 || len(b) >= 2 && b[0] == '_' && b[1] == '_' {
		return false
	}
	for i, c := range b {
		if !isLetter(c) && (i == 0 || !isDigit(c)) {
			return false
		}
	}
	return true
}

// isLetter includes the underscore, as the name rules do.
func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func typeName(typ dto.MetricType) string {
	switch typ {
	case dto.MetricType_COUNTER:
		return "counter"
	case dto.MetricType_GAUGE:
		return "gauge"
	case dto.MetricType_SUMMARY:
		return "summary"
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		// Text 0.0.4 has no gauge histogram; it reads as a histogram.
		return "histogram"
	default:
		return "untyped"
	}
}

// appendTextHeader appends the HELP (when there is one) and TYPE lines.
func appendTextHeader(b []byte, name, help string, typ dto.MetricType) []byte {
	if help != "" {
		b = append(b, "# HELP "...)
		b = append(b, name...)
		b = append(b, ' ')
		b = appendEscaped(b, help, false)
		b = append(b, '\n')
	}
	b = append(b, "# TYPE "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, typeName(typ)...)
	return append(b, '\n')
}

// appendEscaped escapes backslash and newline, and the double quote too in a
// label value. Runs without special characters are copied whole.
func appendEscaped[T string | []byte](b []byte, s T, quote bool) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' && c != '\n' && (c != '"' || !quote) {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, '\\', '"')
		}
		start = i + 1
	}
	return append(b, s[start:]...)
}

func appendFloat(b []byte, f float64) []byte {
	switch {
	case f == 0:
		return append(b, '0')
	case f == 1:
		return append(b, '1')
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, 1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// appendLine appends one sample line: name and suffix, the labels plus an
// optional extra label (le, quantile) with a float value, the value, and the
// timestamp when kept.
func (s *sample) appendLine(b []byte, name, suffix, extra string, extraValue, value float64, keepTS bool) []byte {
	b = append(b, name...)
	b = append(b, suffix...)
	if len(s.labels) > 0 || extra != "" {
		sep := byte('{')
		for _, l := range s.labels {
			b = append(b, sep)
			b = append(b, l.name...)
			b = append(b, '=', '"')
			b = appendEscaped(b, l.value, true)
			b = append(b, '"')
			sep = ','
		}
		if extra != "" {
			b = append(b, sep)
			b = append(b, extra...)
			b = append(b, '=', '"')
			b = appendFloat(b, extraValue)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendFloat(b, value)
	if keepTS && s.hasTS {
		b = append(b, ' ')
		b = strconv.AppendInt(b, s.ts, 10)
	}
	return append(b, '\n')
}

// appendText appends every line of the sample for a family of type typ,
// which valid has accepted.
func (s *sample) appendText(b []byte, name string, typ dto.MetricType, keepTS bool) []byte {
	switch typ {
	case dto.MetricType_SUMMARY:
		for _, q := range s.quantiles {
			b = s.appendLine(b, name, "", "quantile", q.q, q.v, keepTS)
		}
		b = s.appendLine(b, name, "_sum", "", 0, s.sum, keepTS)
		return s.appendLine(b, name, "_count", "", 0, float64(s.count), keepTS)
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		inf := false
		for _, bk := range s.buckets {
			v := bk.countFloat
			if v == 0 {
				v = float64(bk.count)
			}
			b = s.appendLine(b, name, "_bucket", "le", bk.upper, v, keepTS)
			inf = inf || math.IsInf(bk.upper, 1)
		}
		count := s.countFloat
		if count == 0 {
			count = float64(s.count)
		}
		if !inf {
			b = s.appendLine(b, name, "_bucket", "le", math.Inf(1), count, keepTS)
		}
		b = s.appendLine(b, name, "_sum", "", 0, s.sum, keepTS)
		return s.appendLine(b, name, "_count", "", 0, count, keepTS)
	default:
		return s.appendLine(b, name, "", "", 0, s.value, keepTS)
	}
}
