package benchmark

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBucketBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	values := []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 40, 1<<63 + 12345, ^uint64(0)}
	for range 3000 {
		values = append(values, r.Uint64()>>r.IntN(64))
	}
	for _, v := range values {
		i := bucketOf(v)
		require.Less(t, i, latencyBuckets)
		lo, hi := bucketBounds(i)
		require.LessOrEqual(t, lo, v, "value %d, bucket %d", v, i)
		require.GreaterOrEqual(t, hi, v, "value %d, bucket %d", v, i)
		if lo > 0 {
			require.LessOrEqual(t, float64(hi-lo)/float64(lo), 1.0/64, "bucket %d is too wide", i)
		}
		if i > 0 {
			_, prevHi := bucketBounds(i - 1)
			require.Equal(t, lo, prevHi+1, "buckets %d and %d leave a gap", i-1, i)
		}
	}
}

func TestLatencyQuantiles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values func(r *rand.Rand) []time.Duration
	}{
		{name: "one value", values: func(*rand.Rand) []time.Duration { return []time.Duration{3 * time.Millisecond} }},
		{name: "uniform 1 to 100 ms", values: func(r *rand.Rand) []time.Duration {
			var v []time.Duration
			for range 10000 {
				v = append(v, time.Millisecond+time.Duration(r.Int64N(int64(99*time.Millisecond))))
			}
			return v
		}},
		{name: "long tail", values: func(r *rand.Rand) []time.Duration {
			var v []time.Duration
			for range 5000 {
				v = append(v, time.Duration(r.ExpFloat64()*float64(2*time.Millisecond)))
			}
			return append(v, 3*time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values := tc.values(rand.New(rand.NewPCG(5, 5)))
			var h latencyHistogram
			for _, v := range values {
				h.record(v)
			}
			slices.Sort(values)
			for _, q := range []float64{0.5, 0.9, 0.99, 1} {
				rank := int(float64(len(values))*q+0.999999) - 1
				want := values[max(rank, 0)]
				got := h.quantile(q)
				require.InEpsilon(t, float64(want), float64(got), 1.0/64, "q%.2f", q)
				require.GreaterOrEqual(t, got, want, "q%.2f reports the bucket's top", q)
			}
			require.Equal(t, values[len(values)-1], time.Duration(h.max.Load()))
			require.Equal(t, uint64(len(values)), h.total.Load())
		})
	}
	var empty latencyHistogram
	require.Zero(t, empty.quantile(0.99))
	require.Zero(t, empty.mean())
}
