package mirror

import (
	"bytes"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// gateLeg holds FUA writes (the engine's metadata writes) while armed. A
// fake: no real leg can hold exactly its metadata writes on command.
type gateLeg struct {
	Leg
	armed   atomic.Bool
	release chan struct{}
}

func (g *gateLeg) WriteAt(p []byte, off int64, fua bool) error {
	if fua && g.armed.Load() {
		<-g.release
	}
	return g.Leg.WriteAt(p, off, fua)
}

// A leg failed by a path that does not wait for the failure record (a
// read whose rewrite of the bad copy fails) must still hold back every
// later write and flush until the failure is durable on the survivor:
// otherwise, after a power cut, assembly would trust the failed leg's
// stale copy and lose the acknowledged write. (Found by review.)
func TestWriteAfterUnrecordedLegFailureWaitsForTheRecord(t *testing.T) {
	const legSize = 3 << 20
	const chunk = 64 << 10
	power := &legtest.Power{}
	legs := [2]*legtest.CrashLeg{legtest.NewCrashLeg("crash0", legSize, power), legtest.NewCrashLeg("crash1", legSize, power)}
	if _, err := Create([2]Leg{legs[0], legs[1]}, CreateOptions{ChunkSize: chunk, NodeID: "n"}); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t)
	opts.NodeID = "n"
	opts.BitClearDelay = time.Hour
	opts.IOTimeout = 10 * time.Second
	f0 := legtest.NewFaultLeg(legs[0])
	g1 := &gateLeg{Leg: legs[1], release: make(chan struct{})}
	v, err := Assemble([2]Leg{f0, g1}, opts)
	if err != nil {
		t.Fatal(err)
	}
	X := bytes.Repeat([]byte{'X'}, 4096)
	Y := bytes.Repeat([]byte{'Y'}, 4096)
	if err := v.WriteAt(X, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	// Leg 0 now fails reads and writes; leg 1's metadata writes stall.
	f0.FailFrom(legtest.OpRead, 1, errMedium)
	f0.FailFrom(legtest.OpWrite, 1, errMedium)
	g1.armed.Store(true)
	buf := make([]byte, 4096)
	base := f0.Count(legtest.OpRead)
	for i := 0; f0.Count(legtest.OpRead) == base && i < 100; i++ {
		// One read goes to leg 0, is retried on leg 1, and the failed
		// rewrite fails leg 0 without waiting for the record.
		if err := v.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	if f0.Count(legtest.OpRead) == base {
		t.Fatal("no read reached leg 0")
	}
	done := make(chan error, 1)
	go func() {
		if err := v.WriteAt(Y, 0, false); err != nil {
			done <- err
			return
		}
		done <- v.Flush()
	}()
	select {
	case err := <-done:
		t.Fatalf("write + flush acknowledged (err %v) before leg 0's failure was durable on leg 1", err)
	case <-time.After(time.Second):
	}
	g1.armed.Store(false)
	close(g1.release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write + flush after the failure record: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write + flush never completed after the metadata write went through")
	}
	power.Cut()
	r := rand.New(rand.NewPCG(1, 2))
	p2 := &legtest.Power{}
	rec := [2]Leg{legs[0].Recover(r, p2), legs[1].Recover(r, p2)}
	v2, err := Assemble(rec, opts)
	if err != nil {
		t.Fatal(err)
	}
	waitInSync(t, v2)
	if err := v2.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, Y) {
		t.Fatalf("acknowledged, flushed write lost after the power cut: block 0 reads %q, want 'Y'", buf[0])
	}
	v2.Close()
}

// A flush that fails on the last working leg stops the volume: the writes
// since the previous flush may be gone, and a retried flush that the leg
// then accepts must not report them safe ("fsyncgate").
func TestFlushFailureOnLastLegStopsTheVolume(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.FailLeg(1); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(bytes.Repeat([]byte{'A'}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	p.fault[0].FailNth(legtest.OpFlush, 1, errMedium)
	if err := v.Flush(); err == nil {
		t.Fatal("flush reported success although the last leg's flush failed")
	}
	if err := v.Flush(); err == nil {
		t.Fatal("a retried flush reported the lost writes safe")
	}
	if err := v.WriteAt(bytes.Repeat([]byte{'B'}, 4096), 0, false); err == nil {
		t.Fatal("the volume accepted a write after a failed flush on its last leg")
	}
}
