package mirror

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// memPair is a volume on two in-memory legs behind fault injectors.
type memPair struct {
	mem   [2]*legtest.MemLeg
	fault [2]*legtest.FaultLeg
}

func (p *memPair) legs() [2]Leg { return [2]Leg{p.fault[0], p.fault[1]} }

func newMemPair(t testing.TB, size, chunk int64) *memPair {
	t.Helper()
	p := &memPair{}
	for i := range 2 {
		p.mem[i] = legtest.NewMemLeg([]string{"mem0", "mem1"}[i], size)
		p.fault[i] = legtest.NewFaultLeg(p.mem[i])
	}
	if _, err := Create(p.legs(), CreateOptions{ChunkSize: chunk, NodeID: "test-node"}); err != nil {
		t.Fatal(err)
	}
	return p
}

// reopen makes closed MemLegs usable again (like opening the devices anew).
func (p *memPair) reopen() {
	for _, m := range p.mem {
		m.Reopen()
	}
}

func (p *memPair) identical(size int64) bool {
	return bytes.Equal(p.mem[0].Bytes()[:size], p.mem[1].Bytes()[:size])
}

func examineMem(t testing.TB, l Leg) *LegInfo {
	t.Helper()
	info, err := Examine(l)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

var errMedium = errors.New("medium error")

func TestWriteErrorDegradesThenReAddResyncsOnlyMarkedChunks(t *testing.T) {
	const chunk = 64 << 10
	p := newMemPair(t, 8<<20, chunk)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	p.fault[1].FailNth(legtest.OpWrite, 1, errMedium)
	data := bytes.Repeat([]byte{0xAB}, 4096)
	if err := v.WriteAt(data, 0, false); err != nil {
		t.Fatalf("write with one leg failing must succeed on the other: %v", err)
	}
	st := v.Status()
	if st.State != "degraded" || st.Legs[1].State != "failed" || !strings.Contains(st.Legs[1].Error, "medium error") {
		t.Fatalf("status after leg 1 write error: %+v", st)
	}
	// The failure is durable on the survivor before the write was acked.
	if info := examineMem(t, p.fault[0]); info.LegStates[1] != "failed" || len(info.Generations) != 2 {
		t.Fatalf("leg 0 superblock after the failure: states %v, %d generations; want leg 1 failed and a new generation", info.LegStates, len(info.Generations))
	}
	// Writes while degraded stay marked, even after the clear delay.
	for _, c := range []int64{3, 7, 20} {
		if err := v.WriteAt(data, c*chunk+4096, false); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * testOptions(t).BitClearDelay) // let the clearer run: it must not clear while degraded
	if info := examineMem(t, p.fault[0]); info.BitmapDirtyChunks != 4 {
		t.Fatalf("dirty chunks on the survivor: %d, want 4 (chunks 0, 3, 7, 20)", info.BitmapDirtyChunks)
	}
	if err := v.AddLeg(1, p.fault[1]); err != nil {
		t.Fatal(err)
	}
	if tot := v.Status().Resync.TotalBytes; tot != 4*chunk {
		t.Fatalf("resync of a re-added leg covers %d bytes, want only the 4 marked chunks (%d)", tot, 4*chunk)
	}
	waitInSync(t, v)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !p.identical(v.Size()) {
		t.Fatal("legs differ after re-add and resync")
	}
}

func TestReadErrorRetriedOnOtherLegAndRewritten(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want := bytes.Repeat([]byte("good data "), 1000)[:8192]
	if err := v.WriteAt(want, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	p.fault[0].BadRange(1<<20+4096, 512, errMedium)
	writesBefore := p.fault[0].Count(legtest.OpWrite)
	got := make([]byte, len(want))
	for i := 0; i < 4; i++ { // reads alternate between idle legs: leg 0 is hit
		if err := v.ReadAt(got, 1<<20); err != nil {
			t.Fatalf("read %d: %v (a read error must be retried on the other leg)", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d returned wrong data", i)
		}
	}
	if p.fault[0].Count(legtest.OpWrite) == writesBefore {
		t.Fatal("the bad copy on leg 0 was not rewritten")
	}
	direct := make([]byte, len(want))
	if err := p.fault[0].ReadAt(direct, 1<<20); err != nil {
		t.Fatalf("leg 0 still unreadable after the rewrite: %v", err)
	}
	if !bytes.Equal(direct, want) {
		t.Fatal("leg 0 holds wrong data after the rewrite")
	}
	if st := v.Status(); st.State != "clean" {
		t.Fatalf("a repaired read error must not fail the leg: %+v", st)
	}
}

func TestReadOfOutOfSyncChunkUsesUpToDateLegOnly(t *testing.T) {
	const chunk = 64 << 10
	p := newMemPair(t, 8<<20, chunk)
	opts := testOptions(t)
	opts.ResyncMaxRate, opts.ResyncMinRate = 1, 1 // resync crawls: chunks stay out of sync
	v, err := Assemble(p.legs(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.FailLeg(1); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{7}, 4096)
	if err := v.WriteAt(want, 5*chunk, false); err != nil {
		t.Fatal(err)
	}
	if err := v.AddLeg(1, p.fault[1]); err != nil {
		t.Fatal(err)
	}
	reads1 := p.fault[1].Count(legtest.OpRead)
	got := make([]byte, 4096)
	for i := 0; i < 10; i++ {
		if err := v.ReadAt(got, 5*chunk); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("read of an out-of-sync chunk returned stale data")
		}
	}
	if n := p.fault[1].Count(legtest.OpRead) - reads1; n != 0 {
		t.Fatalf("%d reads of an out-of-sync chunk went to the stale leg", n)
	}
}

func TestReadsBalanceAndSequentialStaysOnOneLeg(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	buf := make([]byte, 4096)
	r0, r1 := p.fault[0].Count(legtest.OpRead), p.fault[1].Count(legtest.OpRead)
	for off := int64(0); off < 64*4096; off += 4096 {
		if err := v.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	d0, d1 := p.fault[0].Count(legtest.OpRead)-r0, p.fault[1].Count(legtest.OpRead)-r1
	if d0 != 0 && d1 != 0 {
		t.Fatalf("a sequential stream was split over both legs (%d, %d reads)", d0, d1)
	}
	r0, r1 = p.fault[0].Count(legtest.OpRead), p.fault[1].Count(legtest.OpRead)
	rnd := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 64; i++ {
		if err := v.ReadAt(buf, int64(rnd.IntN(1000))*4096*2+4096); err != nil {
			t.Fatal(err)
		}
	}
	d0, d1 = p.fault[0].Count(legtest.OpRead)-r0, p.fault[1].Count(legtest.OpRead)-r1
	if d0 < 16 || d1 < 16 {
		t.Fatalf("random reads not balanced over idle legs: %d and %d", d0, d1)
	}
}

func TestFlushAndFUAReachBothLegs(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	f0, f1 := p.mem[0].Flushes(), p.mem[1].Flushes()
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if p.mem[0].Flushes() == f0 || p.mem[1].Flushes() == f1 {
		t.Fatal("FLUSH did not reach both legs")
	}
	fua := &fuaRecorder{}
	v.legs[0], v.legs[1] = fua.wrap(0, v.legs[0]), fua.wrap(1, v.legs[1])
	if err := v.WriteAt(make([]byte, 4096), 8192, true); err != nil {
		t.Fatal(err)
	}
	if !fua.seen[0] || !fua.seen[1] {
		t.Fatalf("FUA write reached legs with fua=%v", fua.seen)
	}
}

type fuaRecorder struct{ seen [2]bool }

type fuaLeg struct {
	Leg
	r    *fuaRecorder
	slot int
}

func (r *fuaRecorder) wrap(slot int, l Leg) Leg { return &fuaLeg{Leg: l, r: r, slot: slot} }

func (f *fuaLeg) WriteAt(p []byte, off int64, fua bool) error {
	if fua && off < 1<<20 {
		f.r.seen[f.slot] = true
	}
	return f.Leg.WriteAt(p, off, fua)
}

func TestHungLegTimesOutAndVolumeKeepsServing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 8<<20, 64<<10)
		opts := testOptions(t)
		opts.IOTimeout = 5 * time.Second
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		p.fault[1].HangFrom(legtest.OpWrite, 1)
		start := time.Now()
		if err := v.WriteAt(make([]byte, 4096), 0, false); err != nil {
			t.Fatalf("write with a hung leg: %v", err)
		}
		if el := time.Since(start); el < opts.IOTimeout || el > 2*opts.IOTimeout {
			t.Fatalf("write returned after %v, want about the I/O timeout %v", el, opts.IOTimeout)
		}
		st := v.Status()
		if st.State != "degraded" || st.Legs[1].State != "failed" || !strings.Contains(st.Legs[1].Error, "no answer within") {
			t.Fatalf("status after a hung write: %+v", st)
		}
		start = time.Now()
		for i := range 10 {
			if err := v.WriteAt(make([]byte, 4096), int64(i)*65536, false); err != nil {
				t.Fatal(err)
			}
		}
		if time.Since(start) != 0 {
			t.Fatalf("writes after the failure still waited for the hung leg (%v)", time.Since(start))
		}
		p.fault[1].Heal()
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAutoReAddAfterLegAnswersAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const chunk = 64 << 10
		p := newMemPair(t, 8<<20, chunk)
		opts := testOptions(t)
		opts.AutoReAdd = true
		opts.ReAddInterval = 2 * time.Second
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		p.fault[1].FailFrom(legtest.OpWrite, 1, errMedium)
		p.fault[1].FailFrom(legtest.OpRead, 1, errMedium)
		for i := range 5 {
			if err := v.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 4096), int64(i)*chunk, false); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Second)
		if st := v.Status(); st.State != "degraded" {
			t.Fatalf("a leg that still fails must stay out: %+v", st)
		}
		p.fault[1].Heal()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := v.WaitInSync(ctx); err != nil {
			t.Fatalf("leg not re-added after it answered again: %v (%+v)", err, v.Status())
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		if !p.identical(v.Size()) {
			t.Fatal("legs differ after automatic re-add")
		}
	})
}

func TestResyncInterruptedResumesFromCheckpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const chunk = 64 << 10
		p := newMemPair(t, 8<<20, chunk)
		opts := testOptions(t)
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.FailLeg(1); err != nil {
			t.Fatal(err)
		}
		const marked = 64
		for c := int64(0); c < marked; c++ {
			if err := v.WriteAt(bytes.Repeat([]byte{byte(c)}, 4096), c*chunk, false); err != nil {
				t.Fatal(err)
			}
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		// Reassemble: leg 1 is stale; the resync runs at 16 chunks/s.
		p.reopen()
		opts.ResyncMinRate, opts.ResyncMaxRate = 16*chunk, 16*chunk
		v, err = Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if st := v.Status(); st.Resync.TotalBytes != marked*chunk || st.Legs[1].State != "rebuilding" {
			t.Fatalf("resync after re-assembly: %+v, want %d bytes toward leg 1", st, marked*chunk)
		}
		time.Sleep(2500 * time.Millisecond)
		st := v.Status()
		if st.Resync.DoneBytes < 20*chunk || st.Resync.DoneBytes > 50*chunk {
			t.Fatalf("after 2.5 s at 16 chunks/s the resync copied %d bytes", st.Resync.DoneBytes)
		}
		if st.Resync.BytesPerSecond <= 0 || st.Resync.ETASeconds <= 0 {
			t.Fatalf("resync progress lacks speed or ETA: %+v", st.Resync)
		}
		if err := v.Close(); err != nil { // interrupts the resync
			t.Fatal(err)
		}
		p.reopen()
		info := examineMem(t, p.fault[0])
		if info.ResyncCheckpoint == 0 || info.BitmapDirtyChunks >= marked || info.LegStates[1] != "rebuilding" {
			t.Fatalf("after the interrupted resync: checkpoint %d, %d dirty chunks, leg 1 %s; want progress recorded",
				info.ResyncCheckpoint, info.BitmapDirtyChunks, info.LegStates[1])
		}
		opts.ResyncMinRate, opts.ResyncMaxRate = 0, 0
		v, err = Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if tot := v.Status().Resync.TotalBytes; tot != info.BitmapDirtyChunks*chunk {
			t.Fatalf("resumed resync covers %d bytes, want the %d chunks left", tot, info.BitmapDirtyChunks)
		}
		waitInSync(t, v)
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		if !p.identical(v.Size()) {
			t.Fatal("legs differ after the resumed resync")
		}
	})
}

func TestVerifyFindsAndRepairsMismatch(t *testing.T) {
	const chunk = 64 << 10
	p := newMemPair(t, 8<<20, chunk)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WriteAt(bytes.Repeat([]byte{1}, 3*chunk), 0, false); err != nil {
		t.Fatal(err)
	}
	// Corrupt leg 1 behind the engine's back (bit rot).
	if err := p.mem[1].WriteAt([]byte("rot"), 2*chunk+100, false); err != nil {
		t.Fatal(err)
	}
	rep, err := v.Verify(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mismatches != 1 || len(rep.Offsets) != 1 || rep.Offsets[0] != 2*chunk || rep.Repaired != 0 || rep.Checked != v.Size() {
		t.Fatalf("verify: %+v, want one mismatch at %d", rep, 2*chunk)
	}
	if st := v.Status().Verify; st.Mismatches != 1 || st.Running {
		t.Fatalf("verify status: %+v", st)
	}
	if rep, err = v.Verify(t.Context(), true); err != nil || rep.Repaired != 1 {
		t.Fatalf("verify with repair: %+v, %v", rep, err)
	}
	if rep, err = v.Verify(t.Context(), false); err != nil || rep.Mismatches != 0 {
		t.Fatalf("verify after repair: %+v, %v", rep, err)
	}
	if !p.identical(v.Size()) {
		t.Fatal("legs differ after repair")
	}
	if err := v.StartVerify(false); err != nil {
		t.Fatal(err)
	}
}

func TestSplitBrainRefusedThenOperatorChooses(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	opts := testOptions(t)
	// Each leg is assembled alone and written: a split brain.
	for i, fill := range []byte{0xA0, 0xB1} {
		legs := [2]Leg{}
		legs[i] = p.fault[i]
		opts.NodeID = []string{"node-a", "node-b"}[i]
		v, err := Assemble(legs, opts)
		if err != nil {
			t.Fatalf("degraded assembly of leg %d: %v", i, err)
		}
		if err := v.WriteAt(bytes.Repeat([]byte{fill}, 4096), 0, false); err != nil {
			t.Fatal(err)
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		p.reopen()
	}
	_, err := Assemble(p.legs(), opts)
	var sb *SplitBrainError
	if !errors.As(err, &sb) {
		t.Fatalf("assembling split legs: %v, want *SplitBrainError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "--keep-leg") || !strings.Contains(msg, "node-a") || !strings.Contains(msg, "node-b") {
		t.Fatalf("split-brain message does not guide the operator: %s", msg)
	}
	p.reopen()
	opts.KeepLeg = 1
	v, err := Assemble(p.legs(), opts)
	if err != nil {
		t.Fatalf("assembling with KeepLeg 1: %v", err)
	}
	if st := v.Status(); st.Resync.TotalBytes != v.Size() {
		t.Fatalf("after a split brain the discarded leg needs a full resync, got %d of %d bytes", st.Resync.TotalBytes, v.Size())
	}
	waitInSync(t, v)
	got := make([]byte, 4096)
	if err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if got[0] != 0xB1 {
		t.Fatalf("volume holds %#x, want leg 1's data 0xB1", got[0])
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !p.identical(v.Size()) {
		t.Fatal("legs differ after split-brain resolution")
	}
}

func TestStaleLegIsNotSplitBrain(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	opts := testOptions(t)
	v, err := Assemble([2]Leg{p.fault[0], nil}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(bytes.Repeat([]byte{9}, 4096), 4096, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	p.reopen()
	// Legs passed in the wrong order: each goes to its recorded slot.
	v, err = Assemble([2]Leg{p.fault[1], p.fault[0]}, opts)
	if err != nil {
		t.Fatalf("assembling a newer and a stale leg: %v", err)
	}
	if st := v.Status(); st.Resync.TotalBytes != v.ChunkSize() || st.Legs[1].State == "in_sync" {
		t.Fatalf("stale leg 1 should get only the one marked chunk: %+v", st)
	}
	waitInSync(t, v)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !p.identical(v.Size()) {
		t.Fatal("legs differ")
	}
}

func TestAssembleRefusals(t *testing.T) {
	blank := legtest.NewMemLeg("blank", 8<<20)
	p := newMemPair(t, 8<<20, 64<<10)
	_, err := Assemble([2]Leg{p.fault[0], blank}, testOptions(t))
	if !errors.Is(err, ErrNoMetadata) || !strings.Contains(err.Error(), "mirrorctl create") || !strings.Contains(err.Error(), "blank") {
		t.Fatalf("assemble with a blank leg: %v", err)
	}
	q := newMemPair(t, 8<<20, 64<<10)
	_, err = Assemble([2]Leg{p.fault[0], q.fault[1]}, testOptions(t))
	if err == nil || !strings.Contains(err.Error(), "belongs to volume") {
		t.Fatalf("assemble legs of two volumes: %v", err)
	}
	_, err = Assemble([2]Leg{p.fault[0], q.fault[0]}, testOptions(t))
	if err == nil || !strings.Contains(err.Error(), "slot 0") {
		t.Fatalf("assemble two slot-0 legs: %v", err)
	}
}

func TestAddLegRefusesOtherVolume(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	q := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble([2]Leg{p.fault[0], nil}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.AddLeg(1, q.fault[1]); !errors.Is(err, ErrExists) {
		t.Fatalf("adding a leg of another volume: %v, want ErrExists", err)
	}
	blank := legtest.NewMemLeg("blank", 8<<20)
	if err := v.AddLeg(1, blank); err != nil {
		t.Fatal(err)
	}
	if st := v.Status(); st.Resync.TotalBytes != v.Size() {
		t.Fatalf("a blank leg needs a full resync: %+v", st.Resync)
	}
	waitInSync(t, v)
	if info := examineMem(t, blank); info.Slot != 1 || info.LegStates != [2]string{"in_sync", "in_sync"} {
		t.Fatalf("new leg's metadata: %+v", info)
	}
}

func TestFailLastLegRefused(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.FailLeg(0); err != nil {
		t.Fatal(err)
	}
	if err := v.FailLeg(1); err == nil {
		t.Fatal("failing the last leg was accepted")
	}
	if l := v.Legs(); l[0] != nil || l[1] == nil {
		t.Fatalf("Legs() after failing leg 0: %v", l)
	}
}

func TestResyncYieldsToApplicationIO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const chunk = 64 << 10
		p := newMemPair(t, 16<<20, chunk)
		opts := testOptions(t)
		opts.ResyncMinRate, opts.ResyncMaxRate = 4*chunk, 100*chunk
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.FailLeg(1); err != nil {
			t.Fatal(err)
		}
		if err := v.AddLeg(1, legtest.NewMemLeg("blank", 16<<20)); err != nil {
			t.Fatal(err)
		}
		// Application writes every 10 ms for 2 s: the resync keeps its floor.
		for i := range 200 {
			if err := v.WriteAt(make([]byte, 4096), int64(i%16)*chunk+8192, false); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		busy := v.Status().Resync.DoneBytes
		if busy > 16*chunk || busy < 4*chunk {
			t.Fatalf("under application I/O the resync copied %d chunks in 2 s, want about the floor of 4/s", busy/chunk)
		}
		time.Sleep(time.Second)
		idle := v.Status().Resync.DoneBytes - busy
		if idle < 50*chunk {
			t.Fatalf("idle, the resync copied %d chunks in 1 s, want about the ceiling of 100/s", idle/chunk)
		}
		waitInSync(t, v)
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAutoReAddBacksOffALegThatKeepsFailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 8<<20, 64<<10)
		opts := testOptions(t)
		opts.AutoReAdd = true
		opts.ReAddInterval = 2 * time.Second
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.WriteAt(make([]byte, 4096), 0, false); err != nil {
			t.Fatal(err)
		}
		p.fault[1].FailFrom(legtest.OpWrite, 1, errMedium) // reads (the probe) still work
		if err := v.WriteAt(make([]byte, 4096), 65536, false); err != nil {
			t.Fatal(err)
		}
		w := p.fault[1].Count(legtest.OpWrite)
		time.Sleep(2 * time.Minute)
		// Each re-add costs a few writes (metadata, then the failing copy).
		// Without backoff about 60 in 2 minutes; with it about 5.
		n := p.fault[1].Count(legtest.OpWrite) - w
		if n > 20 {
			t.Fatalf("%d writes to a leg that fails every write: re-added without backoff", n)
		}
		if st := v.Status(); st.State != "degraded" {
			t.Fatalf("state %s", st.State)
		}
		p.fault[1].Heal()
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestHungReadIsServedByTheOtherLeg(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 8<<20, 64<<10)
		opts := testOptions(t)
		opts.IOTimeout = 2 * time.Second
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte{0x5A}, 4096)
		if err := v.WriteAt(want, 0, false); err != nil {
			t.Fatal(err)
		}
		p.fault[0].HangFrom(legtest.OpRead, 1)
		got := make([]byte, 4096)
		for range 4 { // idle reads alternate: at least one picks leg 0
			if err := v.ReadAt(got, 0); err != nil {
				t.Fatalf("read with a hung leg: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("wrong data")
			}
		}
		if st := v.Status(); st.Legs[0].State != "failed" || st.State != "degraded" {
			t.Fatalf("a leg whose read hung past the timeout must be failed: %+v", st)
		}
		p.fault[0].Heal()
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestReadErrorWithoutAnotherCopyIsReturned(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.FailLeg(1); err != nil {
		t.Fatal(err)
	}
	p.fault[0].BadRange(0, 4096, errMedium)
	if err := v.ReadAt(make([]byte, 4096), 0); !errors.Is(err, errMedium) {
		t.Fatalf("read error on the only leg: %v, want the medium error", err)
	}
	if st := v.Status(); st.Legs[0].State != "in_sync" {
		t.Fatalf("the last leg must not be failed by a read error: %+v", st)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if err := v.WriteAt(make([]byte, 512), 0, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
}
