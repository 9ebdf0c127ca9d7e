package federate

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// FuzzRenderBlock feeds arbitrary bytes to the renderers as a decoded family
// block. Blocks from a peer are checked down to the series entries only, so
// whatever is inside a series may be anything. The renderers must not panic;
// every text they write must pass the strict text parser; the protobuf copy
// must decode whenever the input does, without timestamps.
func FuzzRenderBlock(f *testing.F) {
	f.Fuzz(func(t *testing.T, block []byte, typ uint8) {
		mt := dto.MetricType(typ % 6)
		var (
			s     sample
			text  = appendTextHeader(nil, "fuzz_metric", "help\nwith \\ escapes", mt)
			lines int
		)
		for b := block; len(b) > 0; {
			metric, rest, err := nextMetric(b)
			if err != nil {
				break
			}
			b = rest
			if s.parse(metric) != nil || !s.valid(mt) {
				continue
			}
			text = s.appendText(text, "fuzz_metric", mt, true)
			lines++
		}
		if lines > 0 {
			p := expfmt.NewTextParser(model.LegacyValidation)
			_, err := p.TextToMetricFamilies(bytes.NewReader(text))
			require.NoError(t, err, "strict parser refused:\n%s", text)
		}

		stripped, n, err := stripTimestamps(nil, block)
		var in dto.MetricFamily
		if proto.Unmarshal(block, &in) != nil || in.Name != nil || in.Help != nil || in.Type != nil || in.Unit != nil || len(in.ProtoReflect().GetUnknown()) > 0 {
			return // not a block of metric entries; errors are fine
		}
		require.NoError(t, err)
		require.Equal(t, len(in.Metric), n)
		var out dto.MetricFamily
		require.NoError(t, proto.Unmarshal(stripped, &out))
		require.Len(t, out.Metric, len(in.Metric))
		for i, m := range out.Metric {
			require.Nil(t, m.TimestampMs)
			in.Metric[i].TimestampMs = nil
			require.True(t, proto.Equal(in.Metric[i], m))
		}
	})
}

// TestFuzzSeeds keeps the generated seeds in testdata/fuzz/FuzzRenderBlock in
// step with the test payloads; run with -update to regenerate them. Inputs
// the fuzzer found (regression-*) sit beside them.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzRenderBlock")
	seeds := map[string]string{}
	fams := append(t232(t), rich(1, t0.UnixMilli())...)
	for _, mf := range fams {
		b, err := proto.Marshal(&dto.MetricFamily{Metric: mf.Metric})
		require.NoError(t, err)
		seeds[mf.GetName()] = "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\nbyte(" + strconv.Itoa(int(mf.GetType())) + ")\n"
	}
	seeds["empty"] = "go test fuzz v1\n[]byte(\"\")\nbyte(1)\n"
	if *update {
		require.NoError(t, os.MkdirAll(dir, 0o750))
		for name, content := range seeds {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o640))
		}
	}
	for name, content := range seeds {
		got, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err, "seed %s missing: run go test -run TestFuzzSeeds -update", name)
		require.Equal(t, content, string(got), "seed %s is stale: run go test -run TestFuzzSeeds -update", name)
	}
}
