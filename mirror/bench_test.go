package mirror

import (
	"math/rand/v2"
	"testing"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// Engine benchmarks: file legs measure the real path (O_DIRECT, fdatasync);
// memory legs measure the engine's own overhead per I/O.

func benchVolume(b *testing.B, mem bool) *Volume {
	b.Helper()
	const size = 256 << 20
	var legs [2]Leg
	if mem {
		// Small and pre-touched: measures the engine, not page faults.
		legs = [2]Leg{legtest.NewMemLeg("m0", 16<<20), legtest.NewMemLeg("m1", 16<<20)}
		for _, l := range legs {
			l.WriteAt(make([]byte, 16<<20), 0, false)
		}
	} else {
		dir := b.TempDir()
		legs = [2]Leg{openTestLeg(b, tempLegFile(b, dir, "leg0", size)), openTestLeg(b, tempLegFile(b, dir, "leg1", size))}
	}
	if _, err := Create(legs, CreateOptions{NodeID: "bench"}); err != nil {
		b.Fatal(err)
	}
	o := testOptions(b)
	o.BitClearDelay = 0 // default
	v, err := Assemble(legs, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	return v
}

func benchWrite(b *testing.B, mem, parallel bool, size int) {
	v := benchVolume(b, mem)
	blocks := v.Size() / int64(size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			r := rand.New(rand.NewPCG(rand.Uint64(), 1))
			buf := alignedBuf(size)
			for pb.Next() {
				if err := v.WriteAt(buf, r.Int64N(blocks)*int64(size), false); err != nil {
					b.Fatal(err)
				}
			}
		})
		return
	}
	r := rand.New(rand.NewPCG(1, 1))
	buf := alignedBuf(size)
	for b.Loop() {
		if err := v.WriteAt(buf, r.Int64N(blocks)*int64(size), false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWrite4K(b *testing.B)            { benchWrite(b, false, false, 4096) }
func BenchmarkWrite4KParallel(b *testing.B)    { benchWrite(b, false, true, 4096) }
func BenchmarkWrite1M(b *testing.B)            { benchWrite(b, false, false, 1<<20) }
func BenchmarkWrite4KMem(b *testing.B)         { benchWrite(b, true, false, 4096) }
func BenchmarkWrite4KMemParallel(b *testing.B) { benchWrite(b, true, true, 4096) }

func BenchmarkRead4K(b *testing.B) {
	v := benchVolume(b, false)
	blocks := v.Size() / 4096
	b.SetBytes(4096)
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		buf := alignedBuf(4096)
		for pb.Next() {
			if err := v.ReadAt(buf, r.Int64N(blocks)*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkFlush(b *testing.B) {
	v := benchVolume(b, false)
	buf := alignedBuf(4096)
	for b.Loop() {
		if err := v.WriteAt(buf, 0, false); err != nil {
			b.Fatal(err)
		}
		if err := v.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResync measures a full resync of a 256 MiB leg (bytes/s).
func BenchmarkResync(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		v := benchVolume(b, false)
		if err := v.FailLeg(1); err != nil {
			b.Fatal(err)
		}
		legs := v.legs
		v.mu.Lock()
		v.m.bits.setAll()
		v.mu.Unlock()
		b.SetBytes(v.Size())
		b.StartTimer()
		if err := v.AddLeg(1, legs[1]); err != nil {
			b.Fatal(err)
		}
		waitInSync(b, v)
	}
}

// BenchmarkStartWrite4KMem is the NBD server's way in (StartWriteAt) on
// legs that answer in microseconds: the write runs inline on the caller's
// goroutine, with no allocation.
func BenchmarkStartWrite4KMem(b *testing.B) {
	v := benchVolume(b, true)
	blocks := v.Size() / 4096
	r := rand.New(rand.NewPCG(1, 1))
	buf := alignedBuf(4096)
	done := func(err error, held, stuck bool) {
		if err != nil {
			b.Fatal(err)
		}
	}
	for range 20000 { // every chunk's bit set, the legs' averages warm
		v.StartWriteAt(buf, r.Int64N(blocks)*4096, false, done)
	}
	b.SetBytes(4096)
	b.ResetTimer()
	for b.Loop() {
		v.StartWriteAt(buf, r.Int64N(blocks)*4096, false, done)
	}
}
