package remotewrite

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus under testdata/fuzz")

// fuzzLimits are small enough that the fuzzer reaches every limit.
var fuzzLimits = ReceiveLimits{
	CompressedBytes: 64 << 10,
	DecodedBytes:    256 << 10,
	Series:          2000,
	Samples:         4000,
	LabelsPerSeries: 16,
	NameLength:      64,
	ValueLength:     128,
}

// FuzzDecodeWriteRequest decodes arbitrary bodies, as a snappy block or bare.
// It requires a protocol error for what it refuses; agreement with the
// generated gogo decoder for what it accepts; and that what ToFamilies makes
// of it passes the checks the store relies on.
func FuzzDecodeWriteRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte, snappy bool) {
		encoding := "identity"
		if snappy {
			encoding = "snappy"
		}
		wr, err := DecodeWriteRequest(bytes.NewReader(body), encoding, fuzzLimits)
		if err != nil {
			if !errors.Is(err, upload.ErrInvalid) && !errors.Is(err, upload.ErrTooLarge) {
				t.Fatalf("error is not a protocol error: %v", err)
			}
			return
		}
		raw := body
		if snappy {
			raw, err = s2.Decode(nil, body)
			if err != nil {
				t.Fatalf("accepted a block snappy cannot decode: %v", err)
			}
		}
		var ref prompb.WriteRequest
		if ref.Unmarshal(raw) == nil {
			var want []prompb.TimeSeries
			for _, ts := range ref.Timeseries {
				if len(ts.Samples) > 0 {
					want = append(want, prompb.TimeSeries{Labels: ts.Labels, Samples: ts.Samples})
				}
			}
			if !equalSeries(want, asPrompb(wr)) {
				t.Fatalf("differs from the generated decoder:\nwant %v\ngot  %v", seriesLines(want), seriesLines(asPrompb(wr)))
			}
		}
		families, err := ToFamilies(wr)
		if err != nil {
			if !errors.Is(err, upload.ErrInvalid) {
				t.Fatalf("ToFamilies error is not ErrInvalid: %v", err)
			}
			return
		}
		l := upload.Limits{LabelsPerSeries: fuzzLimits.LabelsPerSeries, NameLength: fuzzLimits.NameLength, ValueLength: fuzzLimits.ValueLength}
		for _, mf := range families {
			if err := upload.CheckFamily(mf, l); err != nil {
				t.Fatalf("family fails the upload checks: %v", err)
			}
		}
	})
}

// equalSeries compares labels and samples, NaN equal to NaN bit for bit.
func equalSeries(a, b []prompb.TimeSeries) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i].Labels) != len(b[i].Labels) || len(a[i].Samples) != len(b[i].Samples) {
			return false
		}
		for j := range a[i].Labels {
			if a[i].Labels[j].Name != b[i].Labels[j].Name || a[i].Labels[j].Value != b[i].Labels[j].Value {
				return false
			}
		}
		for j := range a[i].Samples {
			x, y := a[i].Samples[j], b[i].Samples[j]
			if x.Timestamp != y.Timestamp || math.Float64bits(x.Value) != math.Float64bits(y.Value) {
				return false
			}
		}
	}
	return true
}

// FuzzParseCredential parses arbitrary Authorization values: refusals are
// ErrUnauthorized; what is accepted is bounded, printable, and survives a
// round trip.
func FuzzParseCredential(f *testing.F) {
	f.Fuzz(func(t *testing.T, bearer string) {
		token, id, err := ParseCredential(bearer)
		if err != nil {
			if !errors.Is(err, upload.ErrUnauthorized) {
				t.Fatalf("error is not ErrUnauthorized: %v", err)
			}
			if token != "" || id != "" {
				t.Fatal("values returned with an error")
			}
			return
		}
		if token == "" || id == "" || len(id) > maxClusterID || len(token) > maxToken {
			t.Fatalf("accepted token %q, cluster %q", token, id)
		}
		if !utf8.ValidString(id) || !printable(id) || !printable(token) {
			t.Fatalf("accepted unprintable values %q, %q", token, id)
		}
		again, err := json.Marshal(map[string]string{"authorization_token": token, "cluster_id": id})
		require.NoError(t, err)
		token2, id2, err := ParseCredential(base64.StdEncoding.EncodeToString(again))
		require.NoError(t, err)
		require.Equal(t, token, token2)
		require.Equal(t, id, id2)
	})
}

// seeds are the starting corpus of the fuzz targets.
func seeds(t *testing.T) map[string]map[string][]any {
	t232, err := (&prompb.WriteRequest{Timeseries: ToTimeSeries(loadT232(t), 1700000000000)}).Marshal()
	require.NoError(t, err)
	small, err := (&prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: labelsOf("__name__", "up", "job", "node"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1700000000000}}},
			{Labels: labelsOf("job", "b", "__name__", "up"), Samples: []prompb.Sample{{Value: 0, Timestamp: 1700000000000}, {Value: math.Float64frombits(value.StaleNaN), Timestamp: 1700000015000}}},
			{Labels: labelsOf("__name__", "up", "job", "node"), Samples: []prompb.Sample{{Value: 2, Timestamp: 1700000030000}}},
			{Labels: labelsOf("__name__", "h"), Histograms: []prompb.Histogram{{Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 1, Schema: 2}}},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "up", Help: "Up."}},
	}).Marshal()
	require.NoError(t, err)
	cred := func(s string) []any { return []any{base64.StdEncoding.EncodeToString([]byte(s))} }
	return map[string]map[string][]any{
		"FuzzDecodeWriteRequest": {
			"t232-snappy":      {s2.EncodeSnappy(nil, t232), true},
			"small-snappy":     {s2.EncodeSnappy(nil, small), true},
			"small-identity":   {small, false},
			"declares-4gib":    {append(binary.AppendUvarint(nil, 4<<30-1), 0, 0, 0, 0), true},
			"declares-too-big": {append(binary.AppendUvarint(nil, 4096), 0, 0, 0), true},
			"bomb-x21":         {snappyBomb(300 << 10), true},
			"group-wire-type":  {[]byte{0x0b, 0x0c}, false},
			"empty":            {[]byte{}, true},
			"no-labels":        {rawSeries(appendField(nil, 2, rawSample(1, 1))), false},
			"bad-names":        {rawSeries(appendField(nil, 1, rawLabel("__name__", "a.b")), appendField(nil, 1, rawLabel("__x", "1")), appendField(nil, 2, rawSample(1, 1))), false},
		},
		"FuzzParseCredential": {
			"valid":           cred(`{"authorization_token":"tok","cluster_id":"0b1c-42"}`),
			"bearer-prefix":   {"Bearer " + base64.StdEncoding.EncodeToString([]byte(`{"authorization_token":"t","cluster_id":"c"}`))},
			"url-unpadded":    {base64.RawURLEncoding.EncodeToString([]byte(`{"authorization_token":"??>>","cluster_id":"c"}`))},
			"missing-cluster": cred(`{"authorization_token":"t"}`),
			"not-json":        cred(`garbage`),
			"array":           cred(`["a"]`),
			"control-char":    cred("{\"authorization_token\":\"t\",\"cluster_id\":\"a\\u0000b\"}"),
			"basic":           {"Basic dTpw"},
			"empty":           {""},
		},
	}
}

// TestFuzzSeedCorpus keeps testdata/fuzz in step with seeds; -update
// rewrites it.
func TestFuzzSeedCorpus(t *testing.T) {
	for target, entries := range seeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, args := range entries {
			want := corpusFile(args)
			path := filepath.Join(dir, name)
			if *update {
				require.NoError(t, os.MkdirAll(dir, 0o755))
				require.NoError(t, os.WriteFile(path, want, 0o644))
				continue
			}
			got, err := os.ReadFile(path)
			require.NoError(t, err, "run go test -run TestFuzzSeedCorpus -update")
			require.Equal(t, string(want), string(got), path)
		}
	}
}

// corpusFile renders values in the go test fuzz v1 format.
func corpusFile(args []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			b.WriteString("[]byte(" + strconv.Quote(string(v)) + ")\n")
		case string:
			b.WriteString("string(" + strconv.Quote(v) + ")\n")
		case bool:
			fmt.Fprintf(&b, "bool(%t)\n", v)
		default:
			panic(fmt.Sprintf("corpus value of type %T", a))
		}
	}
	return b.Bytes()
}
