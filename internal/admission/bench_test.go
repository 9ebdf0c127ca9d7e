package admission

import (
	"io"
	"strconv"
	"testing"
	"time"
)

func BenchmarkBudgetAcquire(b *testing.B) {
	b.Run("granted", func(b *testing.B) {
		bu := NewBudget(1<<30, nil)
		b.ReportAllocs()
		for b.Loop() {
			release, err := bu.Acquire(1 << 20)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
	b.Run("refused", func(b *testing.B) {
		bu := NewBudget(1<<30, nil)
		release, err := bu.Acquire(1 << 30)
		if err != nil {
			b.Fatal(err)
		}
		defer release()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := bu.Acquire(1 << 20); err == nil {
				b.Fatal("admitted over budget")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		bu := NewBudget(1<<30, nil)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if release, err := bu.Acquire(1 << 20); err == nil {
					release()
				}
			}
		})
	})
}

func BenchmarkPressureCheck(b *testing.B) {
	mem := &fakeMemory{}
	mem.usage.Store(1 << 20)
	p := NewPressure(1<<30, 0.8, mem.read, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := p.Check(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRuntimeMemory(b *testing.B) {
	read := RuntimeMemory()
	b.ReportAllocs()
	for b.Loop() {
		if read() == 0 {
			b.Fatal("no memory in use")
		}
	}
}

func BenchmarkWritersObserve(b *testing.B) {
	w := NewWriters(time.Hour, 0, nil, nil)
	ids := make([]string, 10_000)
	for i := range ids {
		ids[i] = "cluster-" + strconv.Itoa(i)
		w.Observe(ids[i], "writer")
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if w.Observe(ids[i%len(ids)], "writer") {
				b.Fatal("conflict with one writer")
			}
			i++
		}
	})
}

// endless is a body that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

func BenchmarkMinRateReader(b *testing.B) {
	r := MinRateReader(endless{}, nil, 1, time.Hour, time.Now)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := io.ReadFull(r, buf); err != nil {
			b.Fatal(err)
		}
	}
}
