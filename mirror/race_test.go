package mirror

import (
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// TestWritesRacingResyncLeaveLegsIdentical hammers the chunks a resync is
// copying: a write landing between the copy's read and its write would
// leave the legs different unless the chunk is locked during the copy.
func TestWritesRacingResyncLeaveLegsIdentical(t *testing.T) {
	const chunk = 64 << 10
	for round := range 3 {
		p := newMemPair(t, 4<<20, chunk)
		opts := testOptions(t)
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.FailLeg(1); err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(uint64(round), 9))
		for c := int64(0); c*chunk < v.Size(); c++ {
			if err := v.WriteAt(randBytes(r, 4096), c*chunk, false); err != nil {
				t.Fatal(err)
			}
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		var writes atomic.Int64
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wr := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				buf := make([]byte, 4096)
				for !stop.Load() {
					for i := range buf {
						buf[i] = byte(wr.Uint32())
					}
					off := wr.Int64N(v.Size()/4096) * 4096
					if err := v.WriteAt(buf, off, false); err != nil {
						t.Error(err)
						return
					}
					writes.Add(1)
				}
			}()
		}
		if err := v.AddLeg(1, p.fault[1]); err != nil {
			t.Fatal(err)
		}
		waitInSync(t, v)
		stop.Store(true)
		wg.Wait()
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		if writes.Load() == 0 {
			t.Fatal("no write raced the resync")
		}
		if !p.identical(v.Size()) {
			t.Fatalf("round %d: legs differ after writes raced the resync (%d writes)", round, writes.Load())
		}
	}
}

// TestGroupCommit: many writers marking different chunks at once share
// metadata writes instead of paying one each.
func TestGroupCommit(t *testing.T) {
	const chunk = 64 << 10
	p := newMemPair(t, 8<<20, chunk)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	w0 := p.fault[0].Count(legtest.OpWrite)
	const writers = 64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := v.WriteAt(make([]byte, 4096), int64(i)*chunk, false); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	meta := p.fault[0].Count(legtest.OpWrite) - w0 - writers // leg 0 writes beyond the data writes
	if meta >= writers/2 {
		t.Fatalf("%d writers to fresh chunks caused %d metadata writes on leg 0; group commit should share them", writers, meta)
	}
	t.Logf("%d writers, %d metadata writes", writers, meta)
}

// TestCloseDuringWrites: writes racing Close either complete before it or
// fail with ErrClosed; the legs end identical and marked clean.
func TestCloseDuringWrites(t *testing.T) {
	p := newMemPair(t, 4<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var done atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 3))
			buf := make([]byte, 8192)
			for {
				for i := range buf {
					buf[i] = byte(r.Uint32())
				}
				err := v.WriteAt(buf, r.Int64N(64)*4096, false) // small area: writes overlap and wait
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				done.Add(1)
			}
		}()
	}
	for done.Load() < 200 {
		runtime.Gosched()
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	p.reopen()
	if !p.identical(v.Size()) {
		t.Fatal("legs differ after Close raced writes")
	}
	for i := range 2 {
		if info := examineMem(t, p.fault[i]); !info.Clean || info.BitmapDirtyChunks != 0 {
			t.Fatalf("leg %d after Close: clean %v, %d dirty chunks", i, info.Clean, info.BitmapDirtyChunks)
		}
	}
}
