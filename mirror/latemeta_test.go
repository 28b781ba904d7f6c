package mirror

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// A metadata write that records a leg failed hangs on the last working
// leg: the volume stops, and the abandoned write lands later (the array
// answers after all). The lone-leg rule has two proofs: a leg's own
// superblock records the other failed, or the peer's knowledge (what
// Publish was given) names the leg's newest generation in sync. Those
// must never both let each leg start alone in turn, or each start loses
// what the other acknowledged (model campaign seed 101025): the leg
// started on the peer's knowledge took writes, then the other started on
// its late record and served the old data. Publish therefore runs before
// the metadata write, so the peer knows every state that may land.
func TestLateMetadataWriteAndPeerKnowledgeNeverStartBothLegsAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 4<<20, 64<<10)
		opts := testOptions(t)
		opts.IOTimeout = 2 * time.Second
		var mu sync.Mutex
		var known *KnownState // the peer's persisted copy
		opts.Publish = func(k KnownState) {
			mu.Lock()
			known = &k
			mu.Unlock()
		}
		peer := func() *KnownState {
			mu.Lock()
			defer mu.Unlock()
			if known == nil {
				return nil
			}
			k := *known
			return &k
		}
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, v, fill(0xAA), 0, true)

		// The operator fails leg 1; the metadata write recording it hangs
		// on leg 0, the last working leg: the volume stops.
		p.fault[0].HangNth(legtest.OpWrite, 1)
		err = v.FailLeg(1)
		t.Logf("leg fail 1: %v", err)
		if st := v.Status(); st.State != "failed" {
			t.Fatalf("volume %s after the metadata write hung on the last leg; want failed", st.State)
		}
		v.Close()
		p.fault[0].Heal() // the abandoned metadata write lands on leg 0
		synctest.Wait()
		p.reopen()
		t.Logf("leg 0 records %v, leg 1 records %v", examineMem(t, p.mem[0]).LegStates, examineMem(t, p.mem[1]).LegStates)

		// Takeover: the peer starts leg 1 alone with its knowledge.
		o1 := opts
		o1.Known = peer()
		t.Logf("the peer knows %v", o1.Known)
		v1, err1 := Assemble([2]Leg{nil, p.fault[1]}, o1)
		var lone *LoneLegError
		if err1 != nil {
			if !errors.As(err1, &lone) {
				t.Fatalf("leg 1 alone with the peer's knowledge: %v; want a lone-leg refusal or a start", err1)
			}
			t.Logf("leg 1 alone refused: %v", err1)
			return // leg 0 holds every acknowledged write; nothing can be lost
		}
		mustWrite(t, v1, fill(0xCC), 0, true) // acknowledged on leg 1 only
		v1.Close()
		p.reopen()

		// Leg 0 alone, on its own superblock only (no peer knowledge).
		o0 := opts
		o0.Known = nil
		v0, err0 := Assemble([2]Leg{p.fault[0], nil}, o0)
		if err0 != nil {
			t.Logf("leg 0 alone refused: %v", err0)
			return
		}
		defer v0.Close()
		if got := mustRead(t, v0, 0); got[0] != 0xCC {
			t.Fatalf("leg 1 started alone on the peer's knowledge and acknowledged 0xcc, then leg 0 started alone on its late-landed record and serves %#x: an acknowledged write is lost", got[0])
		}
	})
}
