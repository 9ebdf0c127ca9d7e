package benchmark

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// latencySubBits sets the precision of latencyHistogram: each power of two
// is cut into 2^(latencySubBits-1) equal buckets, so a recorded value and
// the bucket that reports it differ by less than 1/64 (1.6 %).
const latencySubBits = 7

const (
	latencyHalf    = 1 << (latencySubBits - 1)
	latencyBuckets = (64-latencySubBits+1)*latencyHalf + 2*latencyHalf
)

// latencyHistogram records durations in nanoseconds into log-linear
// buckets, in the manner of an HDR histogram: constant memory (30 KiB),
// lock-free recording, bounded relative error at every scale.
type latencyHistogram struct {
	counts [latencyBuckets]atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	max    atomic.Uint64
}

// bucketOf returns the bucket of v: values below 2^latencySubBits have one
// bucket each; above, a bucket spans 2^shift values.
func bucketOf(v uint64) int {
	if v < 2*latencyHalf {
		return int(v)
	}
	shift := bits.Len64(v) - latencySubBits
	return shift*latencyHalf + int(v>>shift)
}

// bucketBounds returns the smallest and largest value of bucket i.
func bucketBounds(i int) (lo, hi uint64) {
	if i < 2*latencyHalf {
		return uint64(i), uint64(i)
	}
	shift := i/latencyHalf - 1
	top := uint64(i - shift*latencyHalf)
	lo = top << shift
	return lo, lo + (1 << shift) - 1
}

func (h *latencyHistogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// quantile returns the q-quantile (0 < q ≤ 1): the largest value of the
// bucket holding the sample of rank ⌈q·n⌉, never more than the maximum.
func (h *latencyHistogram) quantile(q float64) time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			_, hi := bucketBounds(i)
			return time.Duration(min(hi, h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

func (h *latencyHistogram) mean() time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}
