package upload

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	dto "github.com/prometheus/client_model/go"
)

// fuzzLimits keep the structural limits small, so that the fuzzer reaches
// them, and the byte limits at their defaults, so that a decoder allocating
// what a header claims (up to 16 MiB) stands out against the bound below.
var fuzzLimits = Limits{
	CompressedBytes: 1 << 20,
	Families:        64,
	Series:          512,
	LabelsPerSeries: 16,
	NameLength:      64,
	ValueLength:     256,
}

// The allocation bound of QUALITY R4 as this package can keep it. Bytes are
// cheap to bound: a decoder copies what it reads a small number of times
// (allocInputFactor). Objects are not: a series is a few bytes on the wire
// and a few hundred on the heap as dto structs, which is why the bound has a
// term for the objects the structural limits allow (allocObjects) and one for
// the decoded bytes (allocDecodedFactor: the heap cost of the densest valid
// protobuf, a 2-byte element such as an empty span or exemplar, ~64 B each;
// measured ≤ 70× for text). A decoded byte costs that much only when the
// limits let the elements through; what the fuzzer must never find is
// allocation driven by a claim instead of by bytes that arrived.
const (
	allocInputFactor   = 16
	allocDecodedFactor = 80
	allocObjects       = 4 << 20
)

// checkDecode runs Decode on one input and asserts what holds for every
// input: no panic; an error is a StatusError for 400 or 413 (the media type
// is always valid here, so never 415, and never 500); a result obeys the
// limits, passes CheckFamily and survives Encode and Decode unchanged; and
// the allocation stays within the R4 bound.
func checkDecode(t *testing.T, in []byte, contentType, encoding string) {
	t.Helper()
	var (
		fams []*dto.MetricFamily
		err  error
	)
	alloc := allocatedBy(func() {
		fams, err = Decode(bytes.NewReader(in), contentType, encoding, fuzzLimits)
	})

	if err != nil {
		var se *StatusError
		if !errors.As(err, &se) {
			t.Fatalf("error is not a StatusError: %v", err)
		}
		if code := StatusCode(err); code != 400 && code != 413 {
			t.Fatalf("status %d for %v", code, err)
		}
		if fams != nil {
			t.Fatalf("families returned with error %v", err)
		}
	} else {
		if len(fams) > fuzzLimits.Families {
			t.Fatalf("%d families over the limit", len(fams))
		}
		if n := seriesOfAll(fams); n > fuzzLimits.Series {
			t.Fatalf("%d series over the limit", n)
		}
		for _, mf := range fams {
			if err := CheckFamily(mf, fuzzLimits); err != nil {
				t.Fatalf("decoded family fails CheckFamily: %v", err)
			}
		}
		var buf bytes.Buffer
		if err := Encode(&buf, fams); err != nil {
			t.Fatalf("encode: %v", err)
		}
		again, err := Decode(&buf, MediaTypeProtoDelim, "", fuzzLimits)
		if err != nil {
			t.Fatalf("decode of re-encoded families: %v", err)
		}
		requireSameFamilies(t, fams, again)
	}

	if raceEnabled || len(in) > 1<<20 {
		return // the race detector's own allocations blur the figure
	}
	decoded := decodedSize(in, encoding)
	bound := uint64(allocInputFactor*len(in) + allocDecodedFactor*decoded + allocObjects)
	if alloc > bound {
		t.Fatalf("allocated %d bytes for %d input bytes (%d decoded); bound %d", alloc, len(in), decoded, bound)
	}
}

// decodedSize is what the input decompresses to, up to the decoded limit,
// computed apart from the code under test.
func decodedSize(in []byte, encoding string) int {
	if encoding != EncodingSnappy {
		return len(in)
	}
	limit := DefaultLimits().DecodedBytes
	if bytes.HasPrefix(in, snappyStreamMagic) {
		n, _ := io.Copy(io.Discard, io.LimitReader(s2.NewReader(bytes.NewReader(in)), limit))
		return int(n)
	}
	n, err := s2.DecodedLen(in)
	if err != nil || int64(n) > limit || n > maxSnappyExpansion(len(in)) {
		return 0
	}
	return n
}

// fuzzSeeds are added in code as well as kept in testdata/fuzz, so the
// shapes that matter stay covered if the corpus files are pruned.
func fuzzSeeds(tb testing.TB) (protoBody, text []byte) {
	fams := loadT232(tb)
	return encodeProto(tb, fams[:3]), []byte(textOf(tb, family("rpc_seconds", dto.MetricType_SUMMARY, summary("job", "a"))) +
		textOf(tb, family("req_seconds", dto.MetricType_HISTOGRAM, histogram("job", "a"))) +
		"# HELP up Whether the target is up.\n# TYPE up gauge\nup{job=\"a\",instance=\"b\"} 1 1562168610163\n")
}

func FuzzDecodeProto(f *testing.F) {
	pb, _ := fuzzSeeds(f)
	f.Add(pb)
	f.Add(protoBody(f, family("h", dto.MetricType_HISTOGRAM, histogram("a", "b")), family("s", dto.MetricType_SUMMARY, summary())))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		checkDecode(t, in, MediaTypeProtoDelim, "")
	})
}

func FuzzDecodeSnappy(f *testing.F) {
	pb, text := fuzzSeeds(f)
	f.Add(encodeFramed(f, pb))
	f.Add(encodeBlock(pb))
	f.Add(encodeFramed(f, text))
	f.Add(streamOf(dataChunk(0x01, pb[:10]), dataChunk(0x00, pb[10:])))
	f.Fuzz(func(t *testing.T, in []byte) {
		// The same bytes as both payloads: the framing is what is under test.
		checkDecode(t, in, MediaTypeProtoDelim, EncodingSnappy)
		checkDecode(t, in, MediaTypeText, EncodingSnappy)
	})
}

func FuzzDecodeText(f *testing.F) {
	_, text := fuzzSeeds(f)
	f.Add(text)
	f.Add([]byte("a{b=\"c\\\"d\",e=\"\\n\"} 1e3 -5\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		checkDecode(t, in, MediaTypeText, "")
	})
}

// FuzzParseRetryAfter: any header value gives a wait between 0 and the cap,
// and what FormatRetryAfter writes reads back as at least what was asked.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "-1", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", ""} {
		f.Add(s)
	}
	now := time.Date(2015, 10, 21, 7, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRetryAfter(v, now)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %v, outside [0, %v]", v, d, maxRetryAfter)
		}
		if strings.TrimSpace(v) == "" && d != 0 {
			t.Fatalf("blank header gave %v", d)
		}
		if d == 0 {
			return
		}
		back := ParseRetryAfter(FormatRetryAfter(d), now)
		if back < d || back >= d+time.Second {
			t.Fatalf("%q: %v formats as %q and reads back as %v", v, d, FormatRetryAfter(d), back)
		}
	})
}
