package legtest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestCrashLegKeepsFlushedAndFUAWrites(t *testing.T) {
	lostSome, keptSome := false, false
	for seed := range 20 {
		p := &Power{}
		c := NewCrashLeg("c", 16*SectorSize, p)
		a, b, fua, late := bytes.Repeat([]byte{1}, SectorSize), bytes.Repeat([]byte{2}, SectorSize), bytes.Repeat([]byte{3}, SectorSize), bytes.Repeat([]byte{4}, SectorSize)
		must(t, c.WriteAt(a, 0, false))
		must(t, c.Flush())
		must(t, c.WriteAt(fua, SectorSize, true))
		must(t, c.WriteAt(b, 0, false)) // unflushed over flushed
		must(t, c.WriteAt(late, 2*SectorSize, false))
		p.Cut()
		if err := c.WriteAt(a, 0, false); !errors.Is(err, ErrPowerCut) {
			t.Fatalf("write after the cut: %v", err)
		}
		r := c.Recover(rand.New(rand.NewPCG(uint64(seed), 1)), &Power{})
		got := r.Bytes()
		if s0 := got[:SectorSize]; !bytes.Equal(s0, a) && !bytes.Equal(s0, b) {
			t.Fatal("sector 0 is neither its flushed nor its newer content")
		}
		if !bytes.Equal(got[SectorSize:2*SectorSize], fua) {
			t.Fatal("a FUA write was lost")
		}
		switch s2 := got[2*SectorSize : 3*SectorSize]; {
		case bytes.Equal(s2, late):
			keptSome = true
		case bytes.Equal(s2, make([]byte, SectorSize)):
			lostSome = true
		default:
			t.Fatal("sector 2 torn")
		}
	}
	if !lostSome || !keptSome {
		t.Fatalf("over 20 seeds an unflushed write was never lost (%v) or never kept (%v)", !lostSome, !keptSome)
	}
}

func TestPowerCutAfter(t *testing.T) {
	p := &Power{}
	c := NewCrashLeg("c", 4*SectorSize, p)
	p.CutAfter(3)
	must(t, c.WriteAt(make([]byte, 10), 0, false))
	must(t, c.Flush())
	if err := c.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrPowerCut) || !p.IsOff() {
		t.Fatalf("third I/O: %v, power off %v", err, p.IsOff())
	}
}

func TestFaultLegRules(t *testing.T) {
	f := NewFaultLeg(NewMemLeg("m", 1<<20))
	boom := errors.New("boom")
	f.FailNth(OpWrite, 2, boom)
	must(t, f.WriteAt(make([]byte, 512), 0, false))
	if err := f.WriteAt(make([]byte, 512), 0, false); !errors.Is(err, boom) {
		t.Fatalf("second write: %v", err)
	}
	must(t, f.WriteAt(make([]byte, 512), 0, false))
	f.FailFrom(OpFlush, 1, boom)
	for range 3 {
		if err := f.Flush(); !errors.Is(err, boom) {
			t.Fatalf("flush: %v", err)
		}
	}
	f.Heal()
	must(t, f.Flush())

	f.BadRange(4096, 512, boom)
	if err := f.ReadAt(make([]byte, 8192), 0); !errors.Is(err, boom) {
		t.Fatalf("read over a bad range: %v", err)
	}
	must(t, f.ReadAt(make([]byte, 4096), 0))
	must(t, f.WriteAt(make([]byte, 4096), 4096, false)) // rewrite remaps it
	must(t, f.ReadAt(make([]byte, 8192), 0))

	f.HangNth(OpRead, 1)
	done := make(chan error)
	go func() { done <- f.ReadAt(make([]byte, 1), 0) }()
	for f.Hung() == 0 {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("hung read returned")
	default:
	}
	f.Heal()
	must(t, <-done)
	if f.Count(OpRead) != 4 || f.Count(OpWrite) != 4 {
		t.Fatalf("counts: %d reads, %d writes", f.Count(OpRead), f.Count(OpWrite))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
