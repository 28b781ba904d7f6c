package mirror

import (
	"bytes"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// startWrite runs StartWriteAt and reports whether done ran before it
// returned (the inline path) and what done said.
type writeResult struct {
	err          error
	held, stuck  bool
	beforeReturn bool
}

func startWrite(v *Volume, p []byte, off int64) <-chan writeResult {
	ch := make(chan writeResult, 1)
	var returned atomic.Bool
	v.StartWriteAt(p, off, false, func(err error, held, stuck bool) {
		ch <- writeResult{err, held, stuck, !returned.Load()}
	})
	returned.Store(true)
	return ch
}

func TestStartWriteOnFastLegsRunsInlineAndLandsOnBothLegs(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want := bytes.Repeat([]byte{0xA7}, 4096)
	for i := range 40 {
		// The first write to a clean chunk waits for its bitmap bit in a
		// goroutine; the second runs inline. (The legs are measured fast
		// whatever the race detector or a loaded machine makes of them.)
		v.legTime[0].Store(0)
		v.legTime[1].Store(0)
		res := <-startWrite(v, want, int64(i/2)*8192)
		if res.err != nil || res.held || res.stuck {
			t.Fatalf("write %d: %+v", i, res)
		}
		if i%2 == 1 && !res.beforeReturn {
			t.Fatalf("write %d to in-memory legs did not complete inline", i)
		}
	}
	for i := range 2 {
		if got := p.mem[i].Bytes()[19*8192 : 19*8192+4096]; !bytes.Equal(got, want) {
			t.Fatalf("leg %d misses the write", i)
		}
	}
	got := make([]byte, 4096)
	done := make(chan error, 1)
	v.StartReadAt(got, 19*8192, func(data []byte, err error, held, stuck bool) {
		if &data[0] != &got[0] || held || stuck {
			t.Errorf("read of healthy legs: fresh buffer %v, held %v, stuck %v", &data[0] != &got[0], held, stuck)
		}
		done <- err
	})
	if err := <-done; err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back: %v", err)
	}
}

// A leg that hangs while its call runs on the caller's goroutine: the
// caller stays blocked, but the write is finished on the other leg and
// reported within the I/O timeout, the hung leg is failed durably, and the
// caller, once its call returns, forgets the write.
func TestInlineWriteOnHungLegIsRescued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 8<<20, 64<<10)
		opts := testOptions(t)
		opts.IOTimeout = 3 * time.Second
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second write to the chunk runs inline
			if res := <-startWrite(v, make([]byte, 4096), 0); res.err != nil {
				t.Fatalf("warm-up write: %+v", res)
			}
		}
		p.fault[0].HangFrom(legtest.OpWrite, 1) // leg 0 is called first
		want := bytes.Repeat([]byte{0x3C}, 4096)
		ch := make(chan writeResult, 1)
		returned := make(chan struct{})
		start := time.Now()
		go func() {
			v.StartWriteAt(want, 8192, false, func(err error, held, stuck bool) {
				ch <- writeResult{err: err, held: held, stuck: stuck}
			})
			close(returned)
		}()
		res := <-ch // reported while the caller is still blocked
		if el := time.Since(start); el < opts.IOTimeout || el > 2*opts.IOTimeout {
			t.Fatalf("rescue after %v, want about the I/O timeout %v", el, opts.IOTimeout)
		}
		if res.err != nil || !res.held || !res.stuck {
			t.Fatalf("rescued write reported %+v, want success, held and stuck", res)
		}
		select {
		case <-returned:
			t.Fatal("StartWriteAt returned while its inline call to the hung leg was blocked")
		default:
		}
		st := v.Status()
		if st.State != "degraded" || st.Legs[0].State != "failed" {
			t.Fatalf("status after the rescue: %+v", st)
		}
		if got := p.mem[1].Bytes()[8192 : 8192+4096]; !bytes.Equal(got, want) {
			t.Fatal("the rescue did not write the other leg")
		}
		// The failure is on the survivor's disk before the write was
		// reported (rule 3).
		if info := examineMem(t, p.mem[1]); info.LegStates[0] != "failed" {
			t.Fatalf("survivor's superblock after the rescue: %v", info.LegStates)
		}
		p.fault[0].Heal()
		<-returned
		// Later writes skip the failed leg and run normally.
		if res := <-startWrite(v, want, 131072); res.err != nil || res.held {
			t.Fatalf("write after the rescue: %+v", res)
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestInlineReadOnHungLegIsServedFromTheOtherLegInAFreshBuffer(t *testing.T) {
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
		type readResult struct {
			fresh, held, stuck bool
			data               []byte
			err                error
		}
		for range 4 { // idle reads alternate: at least one picks leg 0
			got := make([]byte, 4096)
			ch := make(chan readResult, 1)
			go v.StartReadAt(got, 0, func(data []byte, err error, held, stuck bool) {
				ch <- readResult{&data[0] != &got[0], held, stuck, data, err}
			})
			r := <-ch
			if r.err != nil || !bytes.Equal(r.data, want) {
				t.Fatalf("read with a hung leg: %v", r.err)
			}
			if r.held != r.fresh || r.stuck != r.held {
				t.Fatalf("a rescued read must come in a fresh buffer, held and stuck: %+v", r)
			}
		}
		if st := v.Status(); st.Legs[0].State != "failed" || st.State != "degraded" {
			t.Fatalf("a leg whose inline read hung past the timeout must be failed: %+v", st)
		}
		p.fault[0].Heal()
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// rendezvousLeg makes each write wait until the other leg's write of the
// same request has begun: only calls made in parallel get through.
type rendezvousLeg struct {
	Leg
	mine, other chan struct{}
}

func (l *rendezvousLeg) WriteAt(p []byte, off int64, fua bool) error {
	l.mine <- struct{}{}
	<-l.other
	return l.Leg.WriteAt(p, off, fua)
}

// Legs that are not fast (here: a write that waits for its twin) are
// called in parallel, never one after the other.
func TestSlowLegsAreWrittenInParallel(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	a, b := make(chan struct{}, 1), make(chan struct{}, 1)
	v.mu.Lock()
	v.legs[0] = &rendezvousLeg{Leg: v.legs[0], mine: a, other: b}
	v.legs[1] = &rendezvousLeg{Leg: v.legs[1], mine: b, other: a}
	v.legTime[0].Store(int64(time.Millisecond)) // measured slow
	v.mu.Unlock()
	for _, n := range []int{4096, 1 << 20} {
		select {
		case res := <-startWrite(v, make([]byte, n), 0):
			if res.err != nil {
				t.Fatal(res.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a %d-byte write to slow legs called them one after the other", n)
		}
	}
}

// On legs measured slow, a started write or read calls the legs from
// goroutines of their own; a hung leg there is timed out like any other:
// the I/O is reported within the timeout, with the buffer held (a read
// comes in a fresh buffer) but the caller never stuck.
func TestStartedIOOnSlowHungLegIsReportedHeldNotStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 8<<20, 64<<10)
		opts := testOptions(t)
		opts.IOTimeout = 2 * time.Second
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte{0x77}, 4096)
		if err := v.WriteAt(want, 0, false); err != nil { // the chunk's bit is set
			t.Fatal(err)
		}
		slow := func() {
			v.legTime[0].Store(int64(time.Millisecond))
			v.legTime[1].Store(int64(time.Millisecond))
		}
		slow()
		p.fault[1].HangFrom(legtest.OpWrite, 1)
		start := time.Now()
		res := <-startWrite(v, want, 4096)
		if res.err != nil || !res.held || res.stuck || res.beforeReturn {
			t.Fatalf("write on a slow hung leg: %+v", res)
		}
		if el := time.Since(start); el < opts.IOTimeout || el > 2*opts.IOTimeout {
			t.Fatalf("reported after %v, want about the I/O timeout %v", el, opts.IOTimeout)
		}
		if st := v.Status(); st.Legs[1].State != "failed" {
			t.Fatalf("status: %+v", st)
		}
		// Reads now come from leg 0; make it hang too: no copy is left,
		// and the read fails in time instead of hanging.
		slow()
		got := make([]byte, 4096)
		v.StartReadAt(got, 0, func(data []byte, err error, held, stuck bool) {
			if err != nil || held || stuck || !bytes.Equal(data, want) {
				t.Errorf("read from the survivor: %v held %v stuck %v", err, held, stuck)
			}
		})
		synctest.Wait()
		p.fault[0].HangFrom(legtest.OpRead, 1)
		slow()
		ch := make(chan error, 1)
		v.StartReadAt(got, 0, func(data []byte, err error, held, stuck bool) {
			if !held || stuck || &data[0] == &got[0] {
				t.Errorf("read on the hung survivor: held %v stuck %v fresh %v", held, stuck, &data[0] != &got[0])
			}
			ch <- err
		})
		if err := <-ch; err == nil {
			t.Fatal("a read whose only copy hung succeeded")
		}
		p.fault[0].Heal()
		p.fault[1].Heal()
		v.Close()
	})
}

// Reads larger than inlineSize call their leg from a goroutine and land in
// the caller's buffer.
func TestLargeStartedReadAndWrite(t *testing.T) {
	p := newMemPair(t, 8<<20, 64<<10)
	v, err := Assemble(p.legs(), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want := bytes.Repeat([]byte{0x19, 0x84}, 512<<10)
	if res := <-startWrite(v, want, 1<<20); res.err != nil || res.held {
		t.Fatalf("1 MiB write: %+v", res)
	}
	got := make([]byte, len(want))
	ch := make(chan error, 1)
	v.StartReadAt(got, 1<<20, func(data []byte, err error, held, stuck bool) {
		if &data[0] != &got[0] || held || stuck {
			t.Error("large read not in the caller's buffer")
		}
		ch <- err
	})
	if err := <-ch; err != nil || !bytes.Equal(got, want) {
		t.Fatalf("1 MiB read back: %v", err)
	}
	for i := range 2 {
		if !bytes.Equal(p.mem[i].Bytes()[1<<20:2<<20], want) {
			t.Fatalf("leg %d misses the 1 MiB write", i)
		}
	}
}

// Legs with a completion API (AsyncLeg: the iSCSI initiator) are started
// through it, never inline; a leg whose completion never comes is failed
// within the I/O timeout and the I/O reported held, not stuck.
func TestAsyncLegsAreStartedThroughTheirAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 8<<20, 64<<10)
		opts := testOptions(t)
		opts.IOTimeout = 2 * time.Second
		legs := [2]Leg{&legtest.Async{Leg: p.fault[0]}, &legtest.Async{Leg: p.fault[1]}}
		v, err := Assemble(legs, opts)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte{0x42}, 4096)
		for i := range 4 {
			res := <-startWrite(v, want, int64(i)*4096)
			if res.err != nil || res.held || res.beforeReturn {
				t.Fatalf("write %d to async legs: %+v (an async leg must not complete inline)", i, res)
			}
		}
		got := make([]byte, 4096)
		ch := make(chan error, 1)
		v.StartReadAt(got, 4096, func(_ []byte, err error, _, _ bool) { ch <- err })
		if err := <-ch; err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read from async legs: %v", err)
		}
		p.fault[0].HangFrom(legtest.OpWrite, 1)
		start := time.Now()
		res := <-startWrite(v, want, 8192)
		if res.err != nil || !res.held || res.stuck {
			t.Fatalf("write with a silent async leg: %+v", res)
		}
		if el := time.Since(start); el < opts.IOTimeout || el > 2*opts.IOTimeout {
			t.Fatalf("reported after %v, want about the I/O timeout %v", el, opts.IOTimeout)
		}
		if st := v.Status(); st.Legs[0].State != "failed" || !bytes.Equal(p.mem[1].Bytes()[8192:8192+4096], want) {
			t.Fatalf("after the silent leg: %+v", st)
		}
		p.fault[0].Heal()
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	})
}
