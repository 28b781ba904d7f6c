package mirror

import (
	"errors"
	"testing"
	"time"
)

const mChunk = 64 << 10

var t0 = time.Unix(1000, 0)

// newTestMachine is an in-sync two-leg machine of 100 chunks whose
// assembly metadata write (seq 1) is already durable.
func newTestMachine() *machine {
	id := uint64(100)
	m := newMachine(machineConfig{
		chunk: mChunk, dataSize: 100 * mChunk, delay: time.Second,
		newGen: func() uint64 { id++; return id },
		legs:   [2]legState{legInSync, legInSync},
		events: 1, gens: []generation{{100, 1}}, bitmapGen: 100, lastWriter: "n",
	})
	s := m.snapshot(t0)
	m.metaDone(s, [2]error{})
	return m
}

// durable runs metadata writes until nothing is pending.
func durable(m *machine) {
	for m.metaWork() {
		m.metaDone(m.snapshot(t0), [2]error{})
	}
}

func TestMachineWriteOrdering(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, m *machine)
	}{
		{"first write to a clean chunk waits for its bit", func(t *testing.T, m *machine) {
			tk, a := m.beginWrite(5*mChunk, 4096, t0)
			if a != admitted || tk.seq != 2 || !tk.legs[0] || !tk.legs[1] || !m.metaWork() {
				t.Fatalf("ticket %+v admission %v: want to wait for metadata write 2 to both legs", tk, a)
			}
			s := m.snapshot(t0)
			if s.seq != 2 || len(s.blocks) != 1 || s.blocks[0].idx != 0 || s.sb != nil {
				t.Fatalf("snapshot seq %d, %d blocks, superblock %v: want seq 2 with bitmap block 0 only", s.seq, len(s.blocks), s.sb != nil)
			}
			m.metaDone(s, [2]error{})
			if m.durableSeq < tk.seq {
				t.Fatal("bit not durable after the metadata write")
			}
		}},
		{"writers share one metadata write (group commit)", func(t *testing.T, m *machine) {
			var seqs []uint64
			for c := int64(0); c < 10; c++ {
				tk, _ := m.beginWrite(c*mChunk*7%(100*mChunk), 512, t0)
				seqs = append(seqs, tk.seq)
			}
			for _, s := range seqs {
				if s != seqs[0] {
					t.Fatalf("ten writers wait for different metadata writes: %v", seqs)
				}
			}
			m.snapshot(t0)
			if m.metaWork() {
				t.Fatal("a second metadata write was needed")
			}
		}},
		{"a bit already durable needs no metadata write", func(t *testing.T, m *machine) {
			tk, _ := m.beginWrite(0, 4096, t0)
			m.endWrite(0, 4096, t0)
			durable(m)
			tk, _ = m.beginWrite(8192, 4096, t0)
			if tk.seq > m.durableSeq {
				t.Fatalf("second write to a marked chunk waits for seq %d (durable %d)", tk.seq, m.durableSeq)
			}
		}},
		{"a bit set while a write is in flight goes in the next one", func(t *testing.T, m *machine) {
			m.beginWrite(0, 4096, t0)
			s := m.snapshot(t0) // seq 2 in flight
			tk, _ := m.beginWrite(50*mChunk, 4096, t0)
			if tk.seq != s.seq+1 {
				t.Fatalf("bit set during write %d waits for %d, want %d", s.seq, tk.seq, s.seq+1)
			}
			if m.metaWork() {
				t.Fatal("two metadata writes in flight")
			}
			m.metaDone(s, [2]error{})
			if !m.metaWork() {
				t.Fatal("next metadata write not wanted")
			}
		}},
		{"overlapping write waits, disjoint one does not", func(t *testing.T, m *machine) {
			m.beginWrite(0, 8192, t0)
			if _, a := m.beginWrite(4096, 4096, t0); a != waitTurn {
				t.Fatal("overlapping write admitted")
			}
			if _, a := m.beginWrite(8192, 4096, t0); a != admitted {
				t.Fatal("adjacent write refused")
			}
			m.endWrite(0, 8192, t0)
			if _, a := m.beginWrite(4096, 4096, t0); a != admitted {
				t.Fatal("write refused after the overlapping one ended")
			}
		}},
		{"locked chunk blocks writes until unlocked", func(t *testing.T, m *machine) {
			if !m.lockChunk(3) {
				t.Fatal("idle chunk not ready")
			}
			if _, a := m.beginWrite(3*mChunk+100, 10, t0); a != waitTurn {
				t.Fatal("write admitted into a chunk being copied")
			}
			m.unlockChunk(3)
			if _, a := m.beginWrite(3*mChunk+100, 10, t0); a != admitted {
				t.Fatal("write refused after unlock")
			}
			if m.lockChunk(3) {
				t.Fatal("chunk with a write in flight reported ready for copying")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newTestMachine()) })
	}
}

func TestMachineLegFailure(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, m *machine)
	}{
		{"failure starts a generation and must be recorded before ack", func(t *testing.T, m *machine) {
			seq, err := m.fail(1, errors.New("boom"))
			if err != nil || m.slots[1].state != legFailed || len(m.gens) != 2 || seq != m.nextSeq {
				t.Fatalf("fail: seq %d err %v states %v gens %v", seq, err, m.slots, m.gens)
			}
			s := m.snapshot(t0)
			if s.targets != [2]bool{true, false} || s.sb == nil || s.sb.LegStates[1] != legFailed || len(s.sb.Gens) != 2 {
				t.Fatalf("failure record to %v (superblock %v): want a superblock with the new generation to leg 0 only", s.targets, s.sb != nil)
			}
			tk, _ := m.beginWrite(0, 4096, t0)
			if tk.legs != [2]bool{true, false} {
				t.Fatalf("write after failure goes to %v", tk.legs)
			}
		}},
		{"the last leg is never failed", func(t *testing.T, m *machine) {
			m.fail(0, errors.New("a"))
			if _, err := m.fail(1, errors.New("b")); !errors.Is(err, ErrNoLeg) || m.slots[1].state != legInSync {
				t.Fatalf("failing the last leg: %v, state %v", err, m.slots[1].state)
			}
		}},
		{"losing the source during a rebuild stops the volume", func(t *testing.T, m *machine) {
			m.fail(1, errors.New("x"))
			if err := addLeg(m, 1, [16]byte{1}, true); err != nil {
				t.Fatal(err)
			}
			if _, err := m.fail(0, errors.New("source gone")); err == nil || m.dead == nil {
				t.Fatal("source failure during rebuild did not stop the volume")
			}
			if _, a := m.beginWrite(0, 1, t0); a != admitted || m.dead == nil {
				t.Fatal("dead volume still accepts writes")
			}
		}},
		{"a metadata write failing on one leg does not advance durability", func(t *testing.T, m *machine) {
			tk, _ := m.beginWrite(0, 4096, t0)
			s := m.snapshot(t0)
			m.metaDone(s, [2]error{nil, errors.New("io")})
			if m.durableSeq >= tk.seq {
				t.Fatal("writers released before the failure is recorded")
			}
			if m.slots[1].state != legFailed || !m.metaWork() {
				t.Fatal("failure not queued for recording")
			}
			m.metaDone(m.snapshot(t0), [2]error{})
			if m.durableSeq < tk.seq {
				t.Fatal("writers not released after the failure record")
			}
		}},
		{"a metadata write failing on every leg stops the volume", func(t *testing.T, m *machine) {
			m.beginWrite(0, 4096, t0)
			m.metaDone(m.snapshot(t0), [2]error{errors.New("a"), errors.New("b")})
			if m.dead == nil {
				t.Fatal("volume alive without metadata")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newTestMachine()) })
	}
}

func TestMachineBitClearing(t *testing.T) {
	later := t0.Add(2 * time.Second)
	cases := []struct {
		name      string
		run       func(m *machine) ([]clearCand, [2]uint64)
		wantCands int
		wantClear int
	}{
		{"idle chunk is cleared", func(m *machine) ([]clearCand, [2]uint64) {
			m.beginWrite(0, 4096, t0)
			m.endWrite(0, 4096, t0)
			durable(m)
			return m.clearCandidates(later, false)
		}, 1, 1},
		{"busy chunk is not a candidate", func(m *machine) ([]clearCand, [2]uint64) {
			m.beginWrite(0, 4096, t0)
			durable(m)
			return m.clearCandidates(later, false)
		}, 0, 0},
		{"recently written chunk waits for the delay", func(m *machine) ([]clearCand, [2]uint64) {
			m.beginWrite(0, 4096, t0)
			m.endWrite(0, 4096, later)
			durable(m)
			return m.clearCandidates(later, false)
		}, 0, 0},
		{"a write after the flush keeps the bit", func(m *machine) ([]clearCand, [2]uint64) {
			m.beginWrite(0, 4096, t0)
			m.endWrite(0, 4096, t0)
			durable(m)
			c, ep := m.clearCandidates(later, false)
			m.beginWrite(0, 4096, later) // slipped in between flush and clear
			m.endWrite(0, 4096, later)
			return c, ep
		}, 1, 0},
		{"a leg re-added after the flush keeps the bit", func(m *machine) ([]clearCand, [2]uint64) {
			m.beginWrite(0, 4096, t0)
			m.endWrite(0, 4096, t0)
			durable(m)
			c, ep := m.clearCandidates(later, false)
			m.fail(1, errors.New("x")) // fails and comes back between flush and clear
			addLeg(m, 1, [16]byte{2}, false)
			m.slots[1].state = legInSync
			return c, ep
		}, 1, 0},
		{"nothing is cleared while degraded", func(m *machine) ([]clearCand, [2]uint64) {
			m.beginWrite(0, 4096, t0)
			m.endWrite(0, 4096, t0)
			m.fail(1, errors.New("x"))
			durable(m)
			return m.clearCandidates(later, false)
		}, 0, 0},
		{"close clears every idle bit", func(m *machine) ([]clearCand, [2]uint64) {
			m.bits.set(40)
			return m.clearCandidates(t0, true)
		}, 1, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newTestMachine()
			cands, ep := c.run(m)
			if len(cands) != c.wantCands {
				t.Fatalf("%d candidates, want %d", len(cands), c.wantCands)
			}
			if n := m.clearBits(cands, ep); n != c.wantClear {
				t.Fatalf("%d bits cleared, want %d", n, c.wantClear)
			}
		})
	}
}

func TestMachineRebuildAndReads(t *testing.T) {
	m := newTestMachine()
	m.fail(1, errors.New("x"))
	durable(m)
	m.beginWrite(7*mChunk, 4096, t0)
	m.endWrite(7*mChunk, 4096, t0)
	durable(m)
	if err := addLeg(m, 1, [16]byte{2}, false); err != nil {
		t.Fatal(err)
	}
	if m.needCount != 1 || !m.need.get(7) || m.target() != 1 || m.source() != 0 {
		t.Fatalf("re-added leg: need %d target %d source %d", m.needCount, m.target(), m.source())
	}
	for i := 0; i < 4; i++ {
		if slot, _ := m.pickRead(7, 7, 7*mChunk, 4096, [2]int64{5, 0}); slot != 0 {
			t.Fatalf("out-of-sync chunk read from leg %d", slot)
		}
	}
	if slot, _ := m.pickRead(9, 9, 9*mChunk+1, 1, [2]int64{5, 0}); slot != 1 {
		t.Fatal("an in-sync chunk of the rebuilding leg is not read from the less busy leg")
	}
	src, dst := m.startResync()
	if src != 0 || dst != 1 || m.slots[1].state != legRebuilding {
		t.Fatalf("startResync: %d -> %d, state %v", src, dst, m.slots[1].state)
	}
	if c := m.nextNeed(0); c != 7 {
		t.Fatalf("nextNeed = %d", c)
	}
	m.lockChunk(7)
	st := m.unlockChunk(7)
	m.copied([]int64{7}, []uint64{st}, 8, m.epochs())
	if m.needCount != 0 || m.bits.get(7) || m.checkpoint != 8 {
		t.Fatalf("after copy: need %d bit %v checkpoint %d", m.needCount, m.bits.get(7), m.checkpoint)
	}
	if seq := m.resyncFinished(); seq == 0 || m.slots[1].state != legInSync || m.checkpoint != 0 {
		t.Fatalf("resyncFinished: seq %d state %v", seq, m.slots[1].state)
	}
	// Sequential streams stay on one leg; idle random reads alternate.
	a, _ := m.pickRead(0, 0, 0, 4096, [2]int64{})
	b, _ := m.pickRead(0, 0, 4096, 4096, [2]int64{})
	if a != b {
		t.Fatal("a sequential stream switched legs")
	}
	x, _ := m.pickRead(10, 10, 10*mChunk, 4096, [2]int64{})
	y, _ := m.pickRead(20, 20, 20*mChunk, 4096, [2]int64{})
	if x == y {
		t.Fatal("idle random reads did not alternate")
	}
}

func TestMachineCopiedAfterTargetFailedKeepsBits(t *testing.T) {
	m := newTestMachine()
	m.fail(1, errors.New("x"))
	m.bits.set(4)
	if err := addLeg(m, 1, [16]byte{2}, false); err != nil {
		t.Fatal(err)
	}
	m.startResync()
	m.lockChunk(4)
	st := m.unlockChunk(4)
	ep := m.epochs()
	m.fail(1, errors.New("again")) // the target fails before the batch is recorded
	m.copied([]int64{4}, []uint64{st}, 5, ep)
	if !m.bits.get(4) {
		t.Fatal("a bit was cleared while the volume is degraded")
	}
}

func TestMachineCommitSeq(t *testing.T) {
	m := newTestMachine()
	if got := m.commitSeq(); got != m.durableSeq {
		t.Fatalf("idle commitSeq %d, durable %d", got, m.durableSeq)
	}
	m.beginWrite(0, 1, t0)
	want := m.nextSeq
	if got := m.commitSeq(); got != want {
		t.Fatalf("with changes pending commitSeq %d, want %d", got, want)
	}
	m.snapshot(t0)
	if got := m.commitSeq(); got != want {
		t.Fatalf("with the write in flight commitSeq %d, want %d", got, want)
	}
}

// addLeg attaches a leg to failed slot i the way the driver does.
func addLeg(m *machine, i int, uuid [16]byte, full bool) error {
	if err := m.beginAdd(i, 0, true); err != nil {
		return err
	}
	return m.attach(i, addPlan{full: full, uuid: uuid}, nil, 0, t0)
}
