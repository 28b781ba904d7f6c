package mirror

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// TestChaosFailuresReAddsAndResyncsUnderLoad: writers and readers run
// while the legs fail in turn (write errors, read errors, hangs) and come
// back through AutoReAdd. Every read returns the last acknowledged data
// and, once healed, both legs hold exactly the model.
func TestChaosFailuresReAddsAndResyncsUnderLoad(t *testing.T) {
	const chunk = 64 << 10
	const blk = 4096
	p := newMemPair(t, 8<<20, chunk)
	opts := testOptions(t)
	opts.AutoReAdd = true
	opts.ReAddInterval = 5 * time.Millisecond
	opts.IOTimeout = time.Second
	opts.BitClearDelay = 5 * time.Millisecond
	v, err := Assemble(p.legs(), opts)
	if err != nil {
		t.Fatal(err)
	}
	const writers = 4
	blocks := v.Size() / blk
	per := blocks / writers
	model := make([][]byte, blocks) // last acknowledged content (nil: zeros)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 77))
			lo := int64(w) * per // each writer owns its blocks: the model is exact
			got := make([]byte, blk)
			for !stop.Load() {
				b := lo + r.Int64N(per)
				if r.IntN(3) == 0 {
					if err := v.ReadAt(got, b*blk); err != nil {
						t.Errorf("read: %v", err)
						return
					}
					want := model[b]
					if want == nil {
						want = make([]byte, blk)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("block %d: read differs from the last acknowledged write", b)
						return
					}
					continue
				}
				data := randBytes(r, blk)
				if err := v.WriteAt(data, b*blk, r.IntN(5) == 0); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				model[b] = data
			}
		}()
	}
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 6 {
		victim := p.fault[round%2]
		switch round % 3 {
		case 0:
			victim.FailFrom(legtest.OpWrite, 1+r.IntN(50), errMedium)
		case 1:
			victim.BadRange(r.Int64N(blocks)*blk, blk, errMedium)
			victim.FailNth(legtest.OpFlush, 1, errMedium)
		case 2:
			victim.HangNth(legtest.OpWrite, 1+r.IntN(50))
		}
		time.Sleep(30 * time.Millisecond)
		victim.Heal()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := v.WaitInSync(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: not back in sync: %v (%+v)", round, err, v.Status())
		}
	}
	stop.Store(true)
	wg.Wait()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !p.identical(v.Size()) {
		t.Fatal("legs differ after the chaos")
	}
	data := p.mem[0].Bytes()
	for b := int64(0); b < blocks; b++ {
		want := model[b]
		if want == nil {
			want = make([]byte, blk)
		}
		if !bytes.Equal(data[b*blk:(b+1)*blk], want) {
			t.Fatalf("block %d on the legs differs from the model", b)
		}
	}
}
