package mirror

// Lifecycle tests on in-memory legs: assembly decisions, split brain,
// re-adding legs (by hand and automatically), resumable resync, verify.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

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

// A leg the operator failed stays out even with AutoReAdd on: only
// "mirrorctl leg add" brings it back.
func TestAutoReAddLeavesOperatorFailedLegOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const chunk = 64 << 10
		p := newMemPair(t, 8<<20, chunk)
		opts := testOptions(t)
		opts.AutoReAdd = true
		opts.ReAddInterval = time.Second
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.FailLeg(1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if st := v.Status(); st.State != "degraded" || st.Legs[1].State != "failed" {
			t.Fatalf("operator-failed leg came back by itself: %+v", st)
		}
		if err := v.AddLeg(1, p.legs()[1]); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := v.WaitInSync(ctx); err != nil {
			t.Fatalf("leg add after operator fail: %v (%+v)", err, v.Status())
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
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
	// Each leg is assembled alone (forced: neither is provably newest)
	// and written: a split brain.
	for i, fill := range []byte{0xA0, 0xB1} {
		legs := [2]Leg{}
		legs[i] = p.fault[i]
		opts.NodeID = []string{"node-a", "node-b"}[i]
		opts.KeepLeg = i
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
	opts.KeepLeg = -1
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
	opts.KeepLeg = 0 // leg 1 is away: the operator starts on leg 0
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
	opts.KeepLeg = -1
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
	opts := testOptions(t)
	opts.KeepLeg = 0
	v, err := Assemble([2]Leg{p.fault[0], nil}, opts)
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

// A leg whose metadata cannot be read is not taken for a missing leg: it
// may hold newer data. Assembly refuses, naming it; the operator may keep
// the other leg, and the unreadable one comes back through AddLeg.
func TestAssembleWithAnUnreadableLegNeedsKeepLeg(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	p.fault[1].FailFrom(legtest.OpRead, 1, errMedium)
	base := p.fault[1].Count(legtest.OpRead)
	_, err := Assemble(p.legs(), testOptions(t))
	var ue *UnreadableLegError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "mem1") || !strings.Contains(err.Error(), "--keep-leg 0") {
		t.Fatalf("assemble with one unreadable leg: %v", err)
	}
	if n := p.fault[1].Count(legtest.OpRead) - base; n != 3 {
		t.Fatalf("the unreadable superblock was read %d times, want 3 tries", n)
	}
	opts := testOptions(t)
	opts.KeepLeg = 0
	v, err := Assemble(p.legs(), opts)
	if err != nil {
		t.Fatalf("assemble keeping leg 0: %v", err)
	}
	defer v.Close()
	st := v.Status()
	if st.State != "degraded" || st.Legs[1].State != "failed" || !strings.Contains(st.Legs[1].Error, "unusable") || st.Legs[1].Path != "mem1" {
		t.Fatalf("status: %+v", st)
	}
	if err := v.WriteAt(make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	p.fault[1].Heal()
	if err := v.AddLeg(1, p.fault[1]); err != nil {
		t.Fatal(err)
	}
	waitInSync(t, v)
}

func TestLegDownAtStartIsOpenedFromItsSpecLater(t *testing.T) {
	dir := t.TempDir()
	paths := [2]string{tempLegFile(t, dir, "leg0", 16<<20), tempLegFile(t, dir, "leg1", 16<<20)}
	legs := [2]Leg{openTestLeg(t, paths[0]), openTestLeg(t, paths[1])}
	if _, err := Create(legs, CreateOptions{ChunkSize: 64 << 10, NodeID: "test-node"}); err != nil {
		t.Fatal(err)
	}
	legs[0].Close() // leg 0 could not be opened at start-up: the caller passes nil
	opts := testOptions(t)
	opts.Specs = paths
	opts.KeepLeg = 1 // leg 0 is away: the operator starts on leg 1
	v, err := Assemble([2]Leg{nil, legs[1]}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if st := v.Status(); st.State != "degraded" || st.Legs[0].Path != paths[0] {
		t.Fatalf("status with leg 0 unopened: %+v", st)
	}
	if err := v.WriteAt(bytes.Repeat([]byte{3}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.AddLeg(0, nil); err != nil {
		t.Fatalf("AddLeg(0, nil) must open leg 0 from its spec: %v", err)
	}
	waitInSync(t, v)
}

func TestAutoReAddOpensALegThatWasDownAtStart(t *testing.T) {
	dir := t.TempDir()
	paths := [2]string{tempLegFile(t, dir, "leg0", 16<<20), tempLegFile(t, dir, "leg1", 16<<20)}
	legs := [2]Leg{openTestLeg(t, paths[0]), openTestLeg(t, paths[1])}
	if _, err := Create(legs, CreateOptions{ChunkSize: 64 << 10, NodeID: "test-node"}); err != nil {
		t.Fatal(err)
	}
	legs[1].Close()
	hidden := paths[1] + ".away" // the array is down: the device is not there
	if err := os.Rename(paths[1], hidden); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t)
	opts.Specs = paths
	opts.AutoReAdd = true
	opts.ReAddInterval = 10 * time.Millisecond
	opts.KeepLeg = 0 // leg 1's array is down: the operator starts on leg 0
	v, err := Assemble([2]Leg{legs[0], nil}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WriteAt(bytes.Repeat([]byte{4}, 4096), 8192, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if st := v.Status(); st.State != "degraded" {
		t.Fatalf("state %s while leg 1 is away", st.State)
	}
	if err := os.Rename(hidden, paths[1]); err != nil {
		t.Fatal(err)
	}
	waitInSync(t, v)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !legsIdentical(t, paths, v.Size()) {
		t.Fatal("legs differ after the late leg was added")
	}
}
