package mirror

import (
	"bytes"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/mirror/legtest"
)

// The second leg of an inline write hangs (the first already has the
// data): the write is acknowledged within the I/O timeout, once the hung
// leg's failure is durable on the survivor; every counter of work in
// flight is back to zero, so Close would not wait for the blocked caller;
// AutoReAdd leaves the leg alone while the abandoned call is out. When
// that call finally lands (stale data, after a newer write went to the
// survivor only), the re-added leg is resynced over it: nothing
// acknowledged is lost, and the blocked caller never reports twice.
func TestInlineWriteHungOnSecondLegLateLandingIsResynced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 8<<20, 64<<10)
		opts := testOptions(t)
		opts.IOTimeout = 2 * time.Second
		opts.AutoReAdd = true
		opts.ReAddInterval = 100 * time.Millisecond
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the chunk's bit is set: the next write runs inline
			if res := <-startWrite(v, make([]byte, 4096), 0); res.err != nil {
				t.Fatalf("warm-up write: %+v", res)
			}
		}
		v.legTime[0].Store(0)
		v.legTime[1].Store(0)
		p.fault[1].HangFrom(legtest.OpWrite, 1)
		stale := bytes.Repeat([]byte{0x11}, 4096)
		calls := make(chan writeResult, 2)
		returned := make(chan struct{})
		go func() {
			v.StartWriteAt(stale, 0, false, func(err error, held, stuck bool) {
				calls <- writeResult{err: err, held: held, stuck: stuck}
			})
			close(returned)
		}()
		res := <-calls
		if res.err != nil || !res.held || !res.stuck {
			t.Fatalf("write whose second leg hung: %+v, want success, held and stuck", res)
		}
		if info := examineMem(t, p.mem[0]); info.LegStates[1] != "failed" {
			t.Fatalf("acknowledged before leg 1's failure was durable: %v", info.LegStates)
		}
		v.mu.Lock()
		ops := v.ops
		v.mu.Unlock()
		if ops != 0 || v.appIO.Load() != 0 || v.reads.Load() != 0 || v.outstanding[1].Load() != 1 {
			t.Fatalf("after the rescue: ops %d appIO %d reads %d outstanding[1] %d, want 0 0 0 1",
				ops, v.appIO.Load(), v.reads.Load(), v.outstanding[1].Load())
		}
		// A newer write of the same block goes to the survivor only.
		fresh := bytes.Repeat([]byte{0x22}, 4096)
		if res := <-startWrite(v, fresh, 0); res.err != nil || res.held {
			t.Fatalf("write after the rescue: %+v", res)
		}
		time.Sleep(5 * opts.ReAddInterval)
		synctest.Wait()
		if st := v.Status(); st.Legs[1].State != "failed" {
			t.Fatalf("leg 1 re-added while its abandoned write was still out: %+v", st)
		}
		p.fault[1].Heal() // the stale write lands on leg 1 now
		<-returned
		if !bytes.Equal(p.mem[1].Bytes()[:4096], stale) {
			t.Fatal("the abandoned write did not land: the test proves nothing")
		}
		deadline := time.Now().Add(time.Minute)
		for v.Status().State != "clean" {
			if time.Now().After(deadline) {
				t.Fatalf("leg 1 not re-added and resynced: %+v", v.Status())
			}
			time.Sleep(opts.ReAddInterval)
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case res := <-calls:
			t.Fatalf("done called a second time: %+v", res)
		default:
		}
		for i := range 2 {
			if got := p.mem[i].Bytes()[:4096]; !bytes.Equal(got, fresh) {
				t.Fatalf("leg %d holds %x..., want the acknowledged %x...", i, got[:4], fresh[:4])
			}
		}
	})
}

// A read whose leg fails is retried on the other leg, into the same
// buffer; when that retry hangs, its call may still write into the buffer
// after the read was reported, so the read must be reported held (the NBD
// server would otherwise pool the buffer and a later reply could carry
// the late data). Inline (fast legs) and started (slow legs) alike.
func TestReadRetryThatHangsReportsTheBufferHeld(t *testing.T) {
	for _, slow := range []bool{false, true} {
		name := map[bool]string{false: "inline", true: "started"}[slow]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newMemPair(t, 8<<20, 64<<10)
				opts := testOptions(t)
				opts.IOTimeout = 2 * time.Second
				v, err := Assemble(p.legs(), opts)
				if err != nil {
					t.Fatal(err)
				}
				if err := v.WriteAt(bytes.Repeat([]byte{0x5A}, 8192), 0, false); err != nil {
					t.Fatal(err)
				}
				if err := v.ReadAt(make([]byte, 4096), 0); err != nil {
					t.Fatal(err)
				}
				// The next read, at 4096, goes to the same leg (sequential).
				first := 0
				if p.fault[1].Count(legtest.OpRead) > 0 {
					first = 1
				}
				defer func() {
					p.fault[0].Heal()
					p.fault[1].Heal()
					v.Close()
				}()
				p.fault[first].FailNth(legtest.OpRead, 1, errMedium)
				p.fault[1-first].HangFrom(legtest.OpRead, 1)
				speed := int64(0)
				if slow {
					speed = int64(time.Millisecond)
				}
				v.legTime[0].Store(speed)
				v.legTime[1].Store(speed)
				got := make([]byte, 4096)
				type result struct {
					fresh, held bool
					err         error
				}
				ch := make(chan result, 1)
				go v.StartReadAt(got, 4096, func(data []byte, err error, held, stuck bool) {
					ch <- result{&data[0] != &got[0], held, err}
				})
				r := <-ch
				if p.fault[1-first].Hung() != 1 {
					t.Fatalf("the retry on leg %d is not hung: the test proves nothing", 1-first)
				}
				if r.err == nil {
					t.Fatal("a read whose copies failed and hung succeeded")
				}
				if !r.held {
					t.Fatalf("read reported with the buffer free (held %v, fresh %v) while its hung retry still writes into it", r.held, r.fresh)
				}
			})
		})
	}
}

// The watchdog idles after a quiet period and sleeps on a timer during
// one; a call that hangs in either state is still answered at its
// deadline, not later (virtual time is exact here).
func TestWatchdogAnswersOnTimeAfterIdleAndQuiet(t *testing.T) {
	for _, gap := range []time.Duration{5 * time.Second, 1500 * time.Millisecond, 0} {
		t.Run(gap.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newMemPair(t, 8<<20, 64<<10)
				opts := testOptions(t)
				opts.IOTimeout = 2 * time.Second
				opts.BitClearDelay = time.Hour // the chunk's bit stays set: no metadata write
				v, err := Assemble(p.legs(), opts)
				if err != nil {
					t.Fatal(err)
				}
				defer func() {
					p.fault[0].Heal()
					v.Close()
				}()
				for range 2 {
					if res := <-startWrite(v, make([]byte, 4096), 0); res.err != nil {
						t.Fatalf("warm-up write: %+v", res)
					}
				}
				time.Sleep(gap) // idle (> timeout), in the quiet period, or busy
				v.legTime[0].Store(0)
				v.legTime[1].Store(0)
				p.fault[0].HangFrom(legtest.OpWrite, 1)
				ch := make(chan writeResult, 1)
				start := time.Now()
				go v.StartWriteAt(make([]byte, 4096), 4096, false, func(err error, held, stuck bool) {
					ch <- writeResult{err: err, held: held, stuck: stuck}
				})
				res := <-ch
				if el := time.Since(start); el != opts.IOTimeout {
					t.Fatalf("hung call answered after %v, want exactly the timeout %v", el, opts.IOTimeout)
				}
				if res.err != nil || !res.stuck {
					t.Fatalf("rescued write: %+v", res)
				}
			})
		})
	}
}

// A write to a clean chunk waits for its bitmap bit; when a leg hangs, the
// bitmap write to it times out and fails the leg, and the data write then
// goes to the survivor alone: the write is reported one I/O timeout after
// the hang, not two.
func TestWriteWaitingForItsBitOnAHungLegTakesOneTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newMemPair(t, 8<<20, 64<<10)
		opts := testOptions(t)
		opts.IOTimeout = 2 * time.Second
		v, err := Assemble(p.legs(), opts)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			p.fault[0].Heal()
			v.Close()
		}()
		p.fault[0].HangFrom(legtest.OpWrite, 1)
		want := bytes.Repeat([]byte{0x6B}, 4096)
		start := time.Now()
		res := <-startWrite(v, want, 1<<20)
		if el := time.Since(start); el > opts.IOTimeout {
			t.Fatalf("write reported after %v, want within the I/O timeout %v", el, opts.IOTimeout)
		}
		if res.err != nil || !bytes.Equal(p.mem[1].Bytes()[1<<20:1<<20+4096], want) {
			t.Fatalf("write with a hung leg: %+v", res)
		}
	})
}
