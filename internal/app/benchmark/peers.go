package benchmark

import (
	"encoding/base64"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/klauspost/compress/s2"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/telemeter/telemeter/internal/upload"
)

// Targets of --target: what the simulated clusters push to. The peers get
// the same payloads as telemeter, so that figures measured against them in
// one run compare like with like.
const (
	// TargetTelemeter: /authorize, then /upload with the v1 protocol.
	TargetTelemeter = "telemeter"
	// TargetRemoteWrite: Prometheus remote write 1.0 to <to> as is (a
	// Prometheus /api/v1/write), every series with the cluster's _id.
	TargetRemoteWrite = "remote-write"
	// TargetPushgateway: text exposition, PUT to
	// <to>/metrics/job/<PushgatewayJob>/_id/<cluster ID>.
	TargetPushgateway = "pushgateway"
)

// PushgatewayJob is the job label of every group pushed to a Pushgateway.
const PushgatewayJob = "telemeter"

// Headers of a remote-write 1.0 request.
const (
	remoteWriteContentType = "application/x-protobuf"
	remoteWriteVersion     = "0.1.0"
	textContentType        = "text/plain; version=0.0.4; charset=utf-8"
)

// Fields of prometheus.WriteRequest, TimeSeries and Sample.
const (
	fieldTimeSeries  protowire.Number = 1 // WriteRequest.timeseries
	fieldTSLabel     protowire.Number = 1 // TimeSeries.labels
	fieldTSSample    protowire.Number = 2 // TimeSeries.samples
	fieldSampleValue protowire.Number = 1
	fieldSampleTime  protowire.Number = 2
)

// flatSample is one Prometheus sample of the template, as a scraper or a
// remote-write receiver sees it: a histogram is its buckets, sum and count,
// a summary its quantiles, sum and count.
type flatSample struct {
	slot int // the cluster value slot holding its value
	// before and after are the encoded remote-write labels, __name__
	// included, sorting before and after the cluster's _id.
	before, after []byte
	// text is the text exposition line up to the value: `name{labels} `,
	// without _id (a Pushgateway takes it from the grouping key).
	text []byte
}

type flatFamily struct {
	header  []byte // text exposition: the # HELP and # TYPE lines
	samples []flatSample
}

// flatTemplate is the template in the shape the peers take. It is built
// once and shared read-only, like the template.
type flatTemplate struct {
	families []flatFamily
	samples  int
}

// flatten builds the peers' view of t. Its sample count equals t.samples.
func (t *template) flatten() *flatTemplate {
	ft := &flatTemplate{}
	for fi := range t.families {
		f := &t.families[fi]
		ff := flatFamily{header: textHeader(f)}
		for si := range f.series {
			s := &f.series[si]
			add := func(suffix, extraName, extraValue string, slot int) {
				ff.samples = append(ff.samples, newFlatSample(f.name+suffix, s.labels, extraName, extraValue, slot))
			}
			switch s.kind {
			case kindHistogram:
				for i, b := range s.bounds {
					add("_bucket", "le", formatFloat(b), s.slot+2+i)
				}
				if n := len(s.bounds); n == 0 || !math.IsInf(s.bounds[n-1], 1) {
					add("_bucket", "le", "+Inf", s.slot) // the +Inf bucket is the count
				}
				add("_sum", "", "", s.slot+1)
				add("_count", "", "", s.slot)
			case kindSummary:
				for i, q := range s.quantiles {
					add("", "quantile", formatFloat(q), s.slot+2+i)
				}
				add("_sum", "", "", s.slot+1)
				add("_count", "", "", s.slot)
			default:
				add("", "", "", s.slot)
			}
		}
		ft.samples += len(ff.samples)
		ft.families = append(ft.families, ff)
	}
	return ft
}

func newFlatSample(name string, labels []*dto.LabelPair, extraName, extraValue string, slot int) flatSample {
	type pair struct{ name, value string }
	pairs := make([]pair, 0, len(labels)+2)
	pairs = append(pairs, pair{"__name__", name})
	for _, lp := range labels {
		pairs = append(pairs, pair{lp.GetName(), lp.GetValue()})
	}
	if extraName != "" {
		pairs = append(pairs, pair{extraName, extraValue})
	}
	slices.SortFunc(pairs, func(a, b pair) int { return strings.Compare(a.name, b.name) })

	fs := flatSample{slot: slot}
	text := []byte(name)
	n := 0
	for _, p := range pairs {
		if strings.Compare(p.name, upload.IDLabel) < 0 {
			fs.before = appendLabel(fs.before, p.name, p.value)
		} else {
			fs.after = appendLabel(fs.after, p.name, p.value)
		}
		if p.name == "__name__" {
			continue
		}
		if n == 0 {
			text = append(text, '{')
		} else {
			text = append(text, ',')
		}
		n++
		text = append(text, p.name...)
		text = append(text, '=', '"')
		text = appendEscaped(text, p.value, true)
		text = append(text, '"')
	}
	if n > 0 {
		text = append(text, '}')
	}
	text = append(text, ' ')
	fs.text = text
	return fs
}

// textHeader is the # HELP and # TYPE lines of a family.
func textHeader(f *family) []byte {
	var b []byte
	if f.help != nil {
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = appendEscaped(b, *f.help, false)
		b = append(b, '\n')
	}
	typ := "untyped"
	switch f.typ {
	case dto.MetricType_COUNTER:
		typ = "counter"
	case dto.MetricType_GAUGE:
		typ = "gauge"
	case dto.MetricType_SUMMARY:
		typ = "summary"
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		typ = "histogram"
	}
	b = append(b, "# TYPE "...)
	b = append(b, f.name...)
	b = append(b, ' ')
	b = append(b, typ...)
	return append(b, '\n')
}

// appendEscaped escapes a label value (backslash, double quote, newline)
// or a HELP text (backslash, newline) for the text format.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '"' && quote:
			b = append(b, '\\', '"')
		default:
			b = append(b, c)
		}
	}
	return b
}

// formatFloat formats an le or quantile value as the text format writes it.
func formatFloat(f float64) string {
	return string(appendFloat(nil, f))
}

func appendFloat(b []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(f):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// appendWriteRequest appends c's payload as a remote-write WriteRequest,
// every sample stamped ts (milliseconds), every series with c's _id.
func (ft *flatTemplate) appendWriteRequest(dst []byte, c *cluster, ts int64) []byte {
	sampleSize := protowire.SizeTag(fieldSampleValue) + 8 +
		protowire.SizeTag(fieldSampleTime) + protowire.SizeVarint(uint64(ts))
	sampleField := protowire.SizeTag(fieldTSSample) + protowire.SizeBytes(sampleSize)
	for fi := range ft.families {
		for si := range ft.families[fi].samples {
			s := &ft.families[fi].samples[si]
			size := len(s.before) + len(c.idLabel) + len(s.after) + sampleField
			dst = protowire.AppendTag(dst, fieldTimeSeries, protowire.BytesType)
			dst = protowire.AppendVarint(dst, uint64(size))
			dst = append(dst, s.before...)
			dst = append(dst, c.idLabel...)
			dst = append(dst, s.after...)
			dst = protowire.AppendTag(dst, fieldTSSample, protowire.BytesType)
			dst = protowire.AppendVarint(dst, uint64(sampleSize))
			dst = protowire.AppendTag(dst, fieldSampleValue, protowire.Fixed64Type)
			dst = protowire.AppendFixed64(dst, math.Float64bits(c.values[s.slot]))
			dst = protowire.AppendTag(dst, fieldSampleTime, protowire.VarintType)
			dst = protowire.AppendVarint(dst, uint64(ts))
		}
	}
	return dst
}

// appendText appends c's payload in the text exposition format, without
// timestamps (a Pushgateway refuses them) and without _id (it comes from
// the grouping key).
func (ft *flatTemplate) appendText(dst []byte, c *cluster) []byte {
	for fi := range ft.families {
		f := &ft.families[fi]
		dst = append(dst, f.header...)
		for si := range f.samples {
			s := &f.samples[si]
			dst = append(dst, s.text...)
			dst = appendFloat(dst, c.values[s.slot])
			dst = append(dst, '\n')
		}
	}
	return dst
}

// encodeRemoteWrite returns c's remote-write body: a snappy block of a
// WriteRequest. The bytes are valid until the next call.
func (e *encoder) encodeRemoteWrite(ft *flatTemplate, c *cluster, ts int64) []byte {
	e.raw = ft.appendWriteRequest(e.raw[:0], c, ts)
	if n := s2.MaxEncodedLen(len(e.raw)); cap(e.block) < n {
		e.block = make([]byte, n)
	}
	return s2.EncodeSnappy(e.block[:cap(e.block)], e.raw)
}

// encodeText returns c's Pushgateway body. The bytes are valid until the
// next call.
func (e *encoder) encodeText(ft *flatTemplate, c *cluster) []byte {
	e.raw = ft.appendText(e.raw[:0], c)
	return e.raw
}

// pushgatewayURL is where a cluster's group lives on a Pushgateway at base.
// An ID that cannot be a path segment as is goes base64url-encoded.
func pushgatewayURL(base, id string) string {
	prefix := strings.TrimSuffix(base, "/") + "/metrics/job/" + PushgatewayJob + "/" + upload.IDLabel
	switch {
	case id == "":
		return prefix + "@base64/=" // the Pushgateway's spelling of an empty value
	case strings.Contains(id, "/"):
		return prefix + "@base64/" + base64.URLEncoding.EncodeToString([]byte(id))
	}
	return prefix + "/" + url.PathEscape(id)
}
