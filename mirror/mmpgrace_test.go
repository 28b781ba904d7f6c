package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror/legtest"
)

// laggingLeg is a leg whose path to the array turns slow (a FAKE: a real
// array's latency cannot be set): once lag is set, a write takes lag to
// land and is answered when it lands, except the multi-mount protection
// block: its first write lands at once and is answered only after lag,
// and every later one fails.
type laggingLeg struct {
	Leg
	mmpOff int64
	lag    atomic.Int64 // time.Duration; 0: no lag
	mu     sync.Mutex
	mmp    int
	last   time.Time
}

// landed is when the last lagging data write landed.
func (l *laggingLeg) landed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func (l *laggingLeg) WriteAt(p []byte, off int64, fua bool) error {
	lag := time.Duration(l.lag.Load())
	if lag == 0 {
		return l.Leg.WriteAt(p, off, fua)
	}
	if off == l.mmpOff {
		l.mu.Lock()
		l.mmp++
		first := l.mmp == 1
		l.mu.Unlock()
		if !first {
			return errors.New("MMP write refused (injected)")
		}
		err := l.Leg.WriteAt(p, off, fua)
		time.Sleep(lag)
		return err
	}
	time.Sleep(lag)
	l.mu.Lock()
	l.last = time.Now()
	l.mu.Unlock()
	return l.Leg.WriteAt(p, off, fua)
}

// The owner's grace (FORMAT.md "Multi-mount protection block") promises
// that it writes nothing to a leg later than the grace after the last MMP
// update it made visible. An owner whose array answers slowly (within the
// I/O timeout) sees its last MMP write succeed only when the answer comes,
// up to an I/O timeout after the block changed on the leg; its leg fails a
// fail window after that answer and its data writes then running land up
// to an I/O timeout later still. A starter that watched the block for the
// grace plus the margin and took over must never have its acknowledged
// write overwritten by the old owner's late one.
func TestMMPGraceCoversASlowOwnersLastWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		a, b := mmpLegs(t)
		hbOff, slot, n, err := HeartbeatSlots(a)
		if err != nil {
			t.Fatal(err)
		}
		mmpOff := hbOff + int64(n)*slot
		la := &laggingLeg{Leg: legtest.NewHandle(a), mmpOff: mmpOff}
		lb := &laggingLeg{Leg: legtest.NewHandle(b), mmpOff: mmpOff}
		o1 := mmpOptions(t, "node1", 1111)
		owner, err := Assemble([2]Leg{la, lb}, o1)
		if err != nil {
			t.Fatal(err)
		}
		defer owner.Close()
		mustWrite(t, owner, fill(0xAA), 0, true) // chunk 0's bit is durable: later writes are data only
		lag := o1.IOTimeout - o1.IOTimeout/20
		time.Sleep(o1.MMP.Interval / 2)
		la.lag.Store(int64(lag))
		lb.lag.Store(int64(lag))
		// The owner's client keeps writing the blocks of chunk 0, a new
		// write every 150 ms, while its array lags.
		stopClient := make(chan struct{})
		var client sync.WaitGroup
		client.Add(1)
		go func() {
			defer client.Done()
			for k := int64(0); ; k++ {
				select {
				case <-stopClient:
					return
				case <-time.After(150 * time.Millisecond):
				}
				client.Add(1)
				go func() {
					defer client.Done()
					_ = owner.WriteAt(fill(0xAA), (k%16)*4096, true)
				}()
			}
		}()
		// A second node starts just after the owner's last MMP write
		// landed: it watches the block, sees it still and takes over.
		time.Sleep(o1.MMP.Interval/2 + 10*time.Millisecond)
		o2 := mmpOptions(t, "node2", 2222)
		starter, err := Assemble([2]Leg{legtest.NewHandle(a), legtest.NewHandle(b)}, o2)
		if err != nil {
			t.Fatalf("the starter: %v", err)
		}
		defer starter.Close()
		t.Logf("the starter took over after %v; owner %s", time.Since(t0), owner.Status().State)
		if err := starter.WriteAt(bytes.Repeat([]byte{0xBB}, 16*4096), 0, true); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * o1.IOTimeout)
		close(stopClient)
		client.Wait()
		got := make([]byte, 16*4096)
		t.Logf("the old owner's last write landed after %v", max(la.landed().Sub(t0), lb.landed().Sub(t0)))
		if err := starter.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		for k := range 16 {
			if got[k*4096] != 0xBB {
				t.Fatalf("the new owner reads %#x in block %d over its acknowledged FUA write of 0xbb: the old owner wrote after its grace", got[k*4096], k)
			}
		}
		la.lag.Store(0)
		lb.lag.Store(0)
	})
}

// Machine rule 9 for multi-mount protection: a RESERVATION CONFLICT on the
// owner's MMP write means another node fenced this one off the array (a
// takeover's PREEMPT). It fences the volume at once, like a conflict on
// any other I/O; it never fails the leg (which would let the volume go on,
// on the other array, recording the fenced leg failed) and never waits a
// fail window meanwhile.
func TestMMPReservationConflictFencesTheVolume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ma, mb := mmpLegs(t)
		fa, fb := legtest.NewFaultLeg(ma), legtest.NewFaultLeg(mb)
		opts := mmpOptions(t, "node1", 1111)
		told := make(chan struct{}, 1)
		opts.OnFenced = func() { told <- struct{}{} }
		v, err := Assemble([2]Leg{fa, fb}, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		events := examineMem(t, ma).Events
		// The peer fenced this node off array b; the volume is idle, so
		// the MMP write is the first to meet the conflict.
		fb.FailFrom(legtest.OpWrite, 1, fmt.Errorf("WRITE(16): %w", iscsi.ErrReservationConflict))
		time.Sleep(opts.MMP.Interval + opts.MMP.Interval/2)
		if st := v.Status(); st.State != "fenced" {
			t.Errorf("after an MMP write met a reservation conflict the volume is %q, want fenced at once", st.State)
		}
		window := max(2*opts.MMP.Interval, opts.IOTimeout)
		time.Sleep(window + opts.MMP.Interval)
		st := v.Status()
		if st.State != "fenced" || st.Legs[1].State != "in_sync" {
			t.Fatalf("a reservation conflict on the MMP block: volume %q, leg 1 %q (%s): want fenced with no leg failed", st.State, st.Legs[1].State, st.Legs[1].Error)
		}
		if got := examineMem(t, ma); got.Events != events || got.LegStates != [2]string{"in_sync", "in_sync"} {
			t.Fatalf("leg 0 records %v (events %d -> %d) after the conflict: metadata written by a fenced node", got.LegStates, events, got.Events)
		}
		select {
		case <-told:
		default:
			t.Error("OnFenced was not called")
		}
		fb.Heal()
	})
}

// Assemble's multi-mount protection I/O (the starter's reads of the MMP
// blocks and its first write) runs under the I/O timeout like every other
// leg call: a leg that answered its superblock read and then hangs makes
// Assemble fail after the timeout, it never hangs the start for good.
func TestMMPStartOnAHangingLegEndsAfterTheIOTimeout(t *testing.T) {
	for _, op := range []legtest.Op{legtest.OpRead, legtest.OpWrite} {
		t.Run(op.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ma, mb := mmpLegs(t)
				fb := legtest.NewFaultLeg(mb)
				opts := mmpOptions(t, "node1", 1111)
				if op == legtest.OpRead {
					fb.HangNth(op, 2) // the read after the superblock's: the MMP block
				} else {
					fb.HangNth(op, 1) // the first write: the MMP block
				}
				done := make(chan error, 1)
				go func() {
					v, err := Assemble([2]Leg{ma, fb}, opts)
					if err == nil {
						v.Close()
					}
					done <- err
				}()
				select {
				case err := <-done:
					t.Logf("assemble: %v", err)
				case <-time.After(10 * opts.IOTimeout):
					fb.Heal()
					<-done
					t.Fatalf("Assemble still ran %v after the leg's MMP %s hung (I/O timeout %v)", 10*opts.IOTimeout, op, opts.IOTimeout)
				}
				fb.Heal()
			})
		})
	}
}
