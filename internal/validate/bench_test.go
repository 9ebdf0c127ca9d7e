package validate

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

// BenchmarkT232 decodes and validates the T232 payload as a client sends it
// (partition label set, labels and series sorted), both ways: "verbatim"
// checks every family on its bytes and copies it into a compressed block,
// "decoded" builds objects and validates them, as every upload did before
// the verbatim path (the store then encodes and compresses them, not
// counted here).
func BenchmarkT232(b *testing.B) {
	text, err := os.ReadFile(filepath.Join("..", "..", "testdata", "timeseries.txt"))
	require.NoError(b, err)
	fams, err := upload.Decode(bytes.NewReader(text), upload.MediaTypeText, "", upload.Limits{})
	require.NoError(b, err)
	ts := now.UnixMilli()
	for _, mf := range fams {
		for _, m := range mf.Metric {
			m.TimestampMs = &ts
		}
	}
	v := New(Options{Now: func() time.Time { return now }}, nil)
	res, err := v.Validate("c1", nil, fams)
	require.NoError(b, err)
	var body bytes.Buffer
	require.NoError(b, upload.Encode(&body, res.Families))
	series := res.Series

	b.Run("verbatim", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			vt := v.Verbatim("c1", nil, upload.Limits{})
			rest, err := upload.DecodeTaking(bytes.NewReader(body.Bytes()), upload.MediaTypeProtoDelim, "", upload.Limits{}, vt.Take)
			if err != nil {
				b.Fatal(err)
			}
			enc, res, err := vt.Finish(rest)
			if err != nil || len(res.Families) != 0 || res.Series != series || len(enc) == 0 {
				b.Fatalf("%v: %d decoded families, %d series", err, len(res.Families), res.Series)
			}
			vt.Release()
		}
		b.ReportMetric(float64(series)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	})
	b.Run("decoded", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			fams, err := upload.Decode(bytes.NewReader(body.Bytes()), upload.MediaTypeProtoDelim, "", upload.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			if res, err := v.Validate("c1", nil, fams); err != nil || res.Series != series {
				b.Fatalf("%v: %d series", err, res.Series)
			}
		}
		b.ReportMetric(float64(series)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	})
}
