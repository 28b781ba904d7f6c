package mirror

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// mmpOptions are test options with multi-mount protection on, as node
// with pid (a second mirrord is another node or process).
func mmpOptions(t *testing.T, node string, pid int) Options {
	o := testOptions(t)
	o.NodeID = node
	o.IOTimeout = 2 * time.Second
	o.MMP = MMPOptions{Interval: time.Second, Margin: 500 * time.Millisecond, PID: pid}
	return o
}

func mmpLegs(t *testing.T) (*legtest.MemLeg, *legtest.MemLeg) {
	a, b := legtest.NewMemLeg("a", 8<<20), legtest.NewMemLeg("b", 8<<20)
	if _, err := Create([2]Leg{a, b}, CreateOptions{ChunkSize: 64 << 10, NodeID: "node1"}); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// copyLeg is what a crashed node leaves on an array: the leg's bytes.
func copyLeg(t *testing.T, m *legtest.MemLeg) *legtest.MemLeg {
	c := legtest.NewMemLeg(m.Name(), m.Size())
	if err := c.WriteAt(m.Bytes(), 0, false); err != nil {
		t.Fatal(err)
	}
	return c
}

// Issue 10 finding 9: a second mirrord (another node) on a volume in use
// waits, sees the owner's MMP block advance and refuses, naming the owner;
// the owner serves on. After a clean close the next start is immediate.
func TestMMPRefusesASecondOwner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mmpLegs(t)
		v1, err := Assemble([2]Leg{a, b}, mmpOptions(t, "node1", 1111))
		if err != nil {
			t.Fatal(err)
		}
		if err := v1.WriteAt(make([]byte, 4096), 0, true); err != nil {
			t.Fatal(err)
		}
		// A second node starting meanwhile watches the block, sees it
		// advance and refuses.
		t0 := time.Now()
		_, err = Assemble([2]Leg{a, b}, mmpOptions(t, "node2", 2222))
		var me *MMPError
		if !errors.As(err, &me) || !errors.Is(err, ErrInUse) || me.Node != "node1" || me.PID != 1111 ||
			!strings.Contains(err.Error(), `node "node1"`) || !strings.Contains(err.Error(), "pid 1111") {
			t.Fatalf("second owner: %v, want an MMPError naming node1 pid 1111", err)
		}
		if waited := time.Since(t0); waited < 2*time.Second {
			t.Fatalf("refused after %v: it must watch at least two intervals", waited)
		}
		if err := v1.WriteAt(make([]byte, 4096), 4096, true); err != nil {
			t.Fatalf("the owner after the refused start: %v", err)
		}
		if st := v1.Status(); st.State != "clean" {
			t.Fatalf("owner status %+v", st)
		}
		if err := v1.Close(); err != nil {
			t.Fatal(err)
		}
		a.Reopen()
		b.Reopen()
		t0 = time.Now()
		v2, err := Assemble([2]Leg{a, b}, mmpOptions(t, "node2", 2222))
		if err != nil {
			t.Fatalf("start after a clean close: %v", err)
		}
		if d := time.Since(t0); d != 0 {
			t.Fatalf("start after a clean close waited %v", d)
		}
		v2.Close()
	})
}

// After a crash (the block says active and no longer advances) a start
// waits the owner's grace plus the margin, then takes the volume.
func TestMMPStartAfterCrashWaitsThenStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mmpLegs(t)
		o1 := mmpOptions(t, "node1", 1111)
		v1, err := Assemble([2]Leg{a, b}, o1)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // a few beats
		ca, cb := copyLeg(t, a), copyLeg(t, b)
		v1.Close()
		t0 := time.Now()
		v2, err := Assemble([2]Leg{ca, cb}, mmpOptions(t, "node1", 3333))
		if err != nil {
			t.Fatalf("start after the owner crashed: %v", err)
		}
		grace := max(2*o1.MMP.Interval, o1.IOTimeout) + o1.MMP.Interval + 2*o1.IOTimeout
		if d := time.Since(t0); d != grace+o1.MMP.Margin {
			t.Fatalf("waited %v, want the owner's grace %v plus the margin %v", d, grace, o1.MMP.Margin)
		}
		v2.Close()
		a.Reopen()
		b.Reopen()
		// A caller that fenced every other writer does not wait.
		v1, err = Assemble([2]Leg{a, b}, o1)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		ca, cb = copyLeg(t, a), copyLeg(t, b)
		v1.Close()
		fenced := mmpOptions(t, "node2", 4444)
		fenced.MMP.Fenced = true
		t0 = time.Now()
		v3, err := Assemble([2]Leg{ca, cb}, fenced)
		if err != nil || time.Since(t0) != 0 {
			t.Fatalf("fenced start: %v after %v, want at once", err, time.Since(t0))
		}
		v3.Close()
	})
}

// Two owners at once (the second skipped the wait: it claims to have
// fenced the first, wrongly): the first sees its block overwritten at its
// next beat and stops writing; the volume reports why.
func TestMMPOverwrittenBlockStopsTheOwner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mmpLegs(t)
		v1, err := Assemble([2]Leg{a, b}, mmpOptions(t, "node1", 1111))
		if err != nil {
			t.Fatal(err)
		}
		o2 := mmpOptions(t, "node2", 2222)
		o2.MMP.Fenced = true
		v2, err := Assemble([2]Leg{a, b}, o2)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		err = v1.WriteAt(make([]byte, 4096), 0, false)
		if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), `node "node2"`) {
			t.Fatalf("a write of the displaced owner: %v, want ErrInUse naming node2", err)
		}
		if st := v1.Status(); st.State != "failed" || !strings.Contains(st.Error, "another writer") {
			t.Fatalf("displaced owner status %+v", st)
		}
		if err := v2.WriteAt(make([]byte, 4096), 0, false); err != nil {
			t.Fatalf("the new owner: %v", err)
		}
		v1.Close()
		v2.Close()
	})
}

// In a cluster that fences (MMPOptions.TakenIsFence), a block overwritten
// by another owner means that owner fenced this node after its silence:
// the volume is fenced (OnFenced, ErrFenced), not failed, so the node
// stops everything at once instead of failing a stop.
func TestMMPOverwrittenBlockIsAFenceInACluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := mmpLegs(t)
		o1 := mmpOptions(t, "node1", 1111)
		o1.MMP.TakenIsFence = true
		told := make(chan struct{})
		o1.OnFenced = func() { close(told) }
		v1, err := Assemble([2]Leg{a, b}, o1)
		if err != nil {
			t.Fatal(err)
		}
		o2 := mmpOptions(t, "node2", 2222)
		o2.MMP.Fenced = true
		v2, err := Assemble([2]Leg{a, b}, o2)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		select {
		case <-told:
		default:
			t.Fatal("OnFenced was not called")
		}
		if st := v1.Status(); st.State != "fenced" || !strings.Contains(st.Error, "another writer") {
			t.Fatalf("displaced owner status %+v, want fenced", st)
		}
		if err := v1.WriteAt(make([]byte, 4096), 0, false); !errors.Is(err, ErrFenced) {
			t.Fatalf("a write of the displaced owner: %v, want ErrFenced", err)
		}
		if err := v2.WriteAt(make([]byte, 4096), 0, false); err != nil {
			t.Fatalf("the new owner: %v", err)
		}
		if err := v1.Close(); !errors.Is(err, ErrFenced) {
			t.Fatalf("closing the displaced owner: %v, want ErrFenced", err)
		}
		v2.Close()
	})
}

// A failed MMP write is not a leg failure; MMP writes failing for the
// fail window are (another node could take the leg over by then), and on
// the last working leg they stop the volume.
func TestMMPWritesFailingFailTheLeg(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ma, mb := mmpLegs(t)
		fa, fb := legtest.NewFaultLeg(ma), legtest.NewFaultLeg(mb)
		opts := mmpOptions(t, "node1", 1111)
		v, err := Assemble([2]Leg{fa, fb}, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		fb.FailFrom(legtest.OpWrite, 1, errors.New("medium error"))
		time.Sleep(1500 * time.Millisecond)
		if st := v.Status(); st.State != "clean" || fb.Count(legtest.OpWrite) == 0 {
			t.Fatalf("one failed MMP write failed the leg (or none was tried): %+v", st)
		}
		window := max(2*opts.MMP.Interval, opts.IOTimeout)
		time.Sleep(window + opts.MMP.Interval)
		st := v.Status()
		if st.State != "degraded" || st.Legs[1].State != "failed" || !strings.Contains(st.Legs[1].Error, "multi-mount protection") {
			t.Fatalf("MMP writes failing for %v: %+v", window, st)
		}
		fa.FailFrom(legtest.OpWrite, 1, errors.New("medium error"))
		time.Sleep(window + 2*opts.MMP.Interval)
		if st := v.Status(); st.State != "failed" || !strings.Contains(st.Error, "multi-mount protection") {
			t.Fatalf("the last leg's MMP writes failing: %+v", st)
		}
		fa.Heal()
		fb.Heal()
	})
}
