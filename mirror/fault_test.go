package mirror

import (
	"bytes"
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
