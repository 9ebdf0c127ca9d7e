package upload

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// The decode benchmarks report per upload of the T232 reference payload
// (232 series); series/s is derived from the same run.

func BenchmarkDecodeT232Proto(b *testing.B) {
	pb := encodeProto(b, loadT232(b))
	framed := encodeFramed(b, pb)
	for _, bc := range []struct {
		name, encoding string
		body           []byte
	}{
		{"plain", "", pb},
		{"snappy", EncodingSnappy, framed},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchDecode(b, bc.body, MediaTypeProtoDelim, bc.encoding, Limits{})
		})
	}
}

func BenchmarkDecodeT232Text(b *testing.B) {
	text := readT232(b)
	for _, bc := range []struct {
		name, encoding string
		body           []byte
	}{
		{"plain", "", text},
		{"snappy", EncodingSnappy, encodeFramed(b, text)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchDecode(b, bc.body, MediaTypeText, bc.encoding, Limits{})
		})
	}
}

func benchDecode(b *testing.B, body []byte, contentType, encoding string, l Limits) {
	b.Helper()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		fams, err := Decode(bytes.NewReader(body), contentType, encoding, l)
		if err != nil {
			b.Fatal(err)
		}
		if len(fams) == 0 {
			b.Fatal("no families")
		}
	}
	b.ReportMetric(232*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

// BenchmarkDecodeSnappyBomb is the CPU side of QUALITY R6 (target: ≤ 5 ms
// each). "claim" is a snappy block declaring 4 GiB; "framed" is a real ×21
// bomb of zero chunks decoding to just over the decoded limit, at the
// default 16 MiB and at 4 MiB, refused at its length prefix because the
// stream cannot deliver it within the limits. The compressed limit is raised
// for the 16 MiB case: at the default 500 KiB such a bomb does not even fit.
// "framed text comment" is a text line of 16 MiB of zeros, refused at the
// longest line the limits allow.
func BenchmarkDecodeSnappyBomb(b *testing.B) {
	claim := []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 'a'}
	cases := []struct {
		name        string
		body        []byte
		contentType string
		l           Limits
	}{
		{"claim 4GiB", claim, "", Limits{}},
		{"framed 4MiB", snappyBomb(b, 4<<20), "", Limits{DecodedBytes: 4 << 20}},
		{"framed 16MiB", snappyBomb(b, 16<<20), "", Limits{CompressedBytes: 1 << 20}},
		{"framed default limits", snappyBomb(b, 16<<20), "", Limits{}},
		{"framed text comment", encodeFramed(b, append([]byte("# "), make([]byte, 16<<20)...)), MediaTypeText, Limits{CompressedBytes: 1 << 20}},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				_, err := Decode(bytes.NewReader(bc.body), bc.contentType, EncodingSnappy, bc.l)
				if StatusCode(err) != 413 {
					b.Fatalf("want 413, got %v", err)
				}
			}
		})
	}
}

// BenchmarkDecodeTextLabelFlood: one text line of ever more labels. Without
// textGuard the parser's cost grew with the square of the line's labels.
func BenchmarkDecodeTextLabelFlood(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("a{")
	for i := 0; sb.Len() < 500<<10; i++ {
		fmt.Fprintf(&sb, `l%d="v",`, i)
	}
	sb.WriteString("} 1\n")
	body := []byte(sb.String())
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		_, err := Decode(bytes.NewReader(body), MediaTypeText, "", Limits{})
		if StatusCode(err) != 413 {
			b.Fatalf("want 413, got %v", err)
		}
	}
}
