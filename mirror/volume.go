package mirror

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Volume is an assembled mirror: two legs (or one, degraded) serving one
// block device. All methods are safe for concurrent use.
type Volume struct {
	opts  Options
	clock Clock
	log   *slog.Logger

	size, chunk int64
	volUUID     [16]byte
	blockSize   int             // exported alignment (blocksize.go)
	zeroRate    [2]atomic.Int64 // measured zeroing speed without/with unmap, bytes/s (zero.go)
	mmp         *mmpOwner       // multi-mount protection, nil when off (mmp.go)

	mu        sync.Mutex
	cond      *sync.Cond
	metaCond  *sync.Cond    // wakes metaLoop only (when it has work or must stop)
	changed   chan struct{} // made by a ctx waiter, closed at the next state change
	m         *machine
	legs      [2]Leg         // leg objects by slot (a failed one is kept for AutoReAdd)
	specs     [2]string      // how each slot's leg is (re)opened
	tmpl      [2]*superblock // per-leg fixed superblock fields
	closing   bool
	metaStop  bool
	fenceTold bool // Options.OnFenced was called
	ops       int  // application I/Os in flight (held writes not included)
	resync    resyncState
	verify    verifyState

	wd          [2]watchdog     // times out each slot's leg calls (legcall.go)
	calls       sync.Pool       // *legCall for reuse (per volume: its channels belong to the caller's synctest bubble)
	inlineOps   sync.Pool       // *inlineOp for reuse
	outstanding [2]atomic.Int64 // leg calls in flight per slot, whatever the leg object, abandoned (timed out) ones included
	legTime     [2]atomic.Int64 // moving average of each leg's small application I/O, ns (inlineop.go)
	appIO       atomic.Int64    // application I/Os in flight (resync yields to them)
	appLast     atomic.Int64    // clock time (ns) the last application I/O ended
	reads       atomic.Int64    // reads in flight (Close waits for them)
	closingFlag atomic.Bool     // closing, readable without mu

	stop     chan struct{}
	bg       sync.WaitGroup
	metaExit chan struct{}
}

// notify wakes every waiter after a state change. Caller holds mu. The
// metadata writer is woken only when it has work (or must stop), so the
// steady-state write, which changes no metadata, wakes no goroutine unless
// one waits; Broadcast without waiters is cheap.
func (v *Volume) notify() {
	v.cond.Broadcast()
	if v.m.fenced != nil && !v.fenceTold {
		v.fenceTold = true
		v.log.Error("FENCED: another node fenced this one (a reservation conflict, or it took the volume over); the volume stops serving", "err", v.m.fenced)
		if f := v.opts.OnFenced; f != nil {
			go f()
		}
	}
	if v.metaStop || v.m.metaWork() {
		v.metaCond.Signal()
	}
	if v.changed != nil {
		close(v.changed)
		v.changed = nil
	}
}

// changedChan returns a channel closed at the next notify (mu held).
func (v *Volume) changedChan() <-chan struct{} {
	if v.changed == nil {
		v.changed = make(chan struct{})
	}
	return v.changed
}

// waitSeq waits (mu held) until metadata write seq is durable.
func (v *Volume) waitSeq(seq uint64) error {
	if seq > v.m.durableSeq {
		v.notify() // wake the metadata writer
	}
	for v.m.durableSeq < seq && v.m.dead == nil {
		v.cond.Wait()
	}
	return v.m.dead
}

// Size is the exported data size in bytes.
func (v *Volume) Size() int64 { return v.size }

// ChunkSize is the bitmap chunk size in bytes.
func (v *Volume) ChunkSize() int64 { return v.chunk }

// Legs returns the current legs by slot (nil when failed or missing).
func (v *Volume) Legs() [2]Leg {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out [2]Leg
	for i := range 2 {
		if v.m.active(i) {
			out[i] = v.legs[i]
		}
	}
	return out
}

// settle handles the results of an I/O sent to legs sel (mu held): legs
// that failed are failed, and the call waits until every leg that missed
// the I/O is durably recorded as failed on the survivor. It returns an
// error when no active leg completed the I/O.
func (v *Volume) settle(sel [2]bool, errs [2]error, op string) error {
	var wait uint64
	var firstErr error
	for i := range 2 {
		if sel[i] && errs[i] != nil && isFencing(errs[i]) {
			// Fenced, not failed: no leg is failed (rule 9).
			v.m.fence(errs[i])
			v.notify()
			return v.m.dead
		}
	}
	for i := range 2 {
		if !sel[i] || errs[i] == nil {
			continue
		}
		if firstErr == nil {
			firstErr = errs[i]
		}
		seq, err := v.m.fail(i, errs[i])
		if err == nil {
			v.log.Warn("leg failed; volume continues degraded", "slot", i, "op", op, "err", errs[i])
		}
		wait = max(wait, seq)
	}
	ok := 0
	for i := range 2 {
		if !v.m.active(i) {
			// Missed by this I/O (failed before it began, by a path that
			// did not wait, such as a read's rewrite, or failed meanwhile):
			// acknowledge only once the failure is durable (rule 3).
			wait = max(wait, v.m.slots[i].failSeq)
			continue
		}
		if sel[i] && errs[i] == nil {
			ok++
		}
	}
	if v.m.dead != nil {
		return v.m.dead
	}
	if ok == 0 {
		if firstErr == nil {
			firstErr = ErrNoLeg
		}
		return fmt.Errorf("%s failed on every leg: %w", op, firstErr)
	}
	if firstErr != nil {
		v.notify()
	}
	return v.waitSeq(wait)
}

// appStart counts an application I/O for the resync's yield decision; the
// returned func ends it.
func (v *Volume) appStart() func() {
	v.appIO.Add(1)
	return func() { v.appDone(time.Time{}) }
}

// appDone ends an application I/O counted by appIO.Add(1) at now (zero:
// read the clock).
func (v *Volume) appDone(now time.Time) {
	if now.IsZero() {
		now = v.clock.Now()
	}
	v.appLast.Store(now.UnixNano())
	v.appIO.Add(-1)
}

// appBusy: application I/O is running or ended within appIdleAfter.
func (v *Volume) appBusy() bool {
	return v.appIO.Load() > 0 || v.clock.Now().UnixNano()-v.appLast.Load() < int64(appIdleAfter)
}

// appIdleAfter is how long after the last application I/O a resync
// returns from its floor rate to its ceiling.
const appIdleAfter = 100 * time.Millisecond

func (v *Volume) checkRange(off, n int64) error {
	if off < 0 || n < 0 || off+n > v.size {
		return fmt.Errorf("[%d, +%d) with volume size %d: %w", off, n, v.size, ErrRange)
	}
	return v.checkAlign(off, n)
}

// WriteAt writes p at off on both legs. It returns when the data is on
// both legs (durable with fua, else after the next Flush), or on one leg
// after the other's failure is durably recorded on it. A leg call that
// timed out may still read p after WriteAt returned (StartWriteAt tells).
func (v *Volume) WriteAt(p []byte, off int64, fua bool) error {
	if err := v.checkRange(off, int64(len(p))); err != nil || len(p) == 0 {
		return err
	}
	err, _ := v.write(off, int64(len(p)), "write", func(l Leg) error { return l.WriteAt(p, off, fua) })
	return err
}

// Flush makes every completed write durable on both legs.
func (v *Volume) Flush() error {
	defer v.appStart()()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closing {
		return ErrClosed
	}
	if v.m.dead != nil {
		return v.m.dead
	}
	sel := [2]bool{v.m.active(0), v.m.active(1)}
	legs := v.legs
	v.ops++
	defer func() { v.ops--; v.notify() }()
	v.mu.Unlock()
	errs, _ := v.both(sel, legs, "flush", 0, Leg.Flush)
	v.mu.Lock()
	if err := v.settle(sel, errs, "flush"); err != nil {
		if v.m.dead == nil && !errors.Is(err, ErrClosed) {
			// No leg holds the writes acknowledged since the last flush
			// for sure, and a later flush may "succeed" after the kernel
			// dropped them: stop rather than let a retry report them safe.
			v.m.dead = fmt.Errorf("flush failed on the last working leg; writes since the previous flush may be lost, so the volume stops serving (check the leg, then restart mirrord): %w", err)
			v.notify()
		}
		return err
	}
	return nil
}

// Known returns what the volume last recorded durably: its generation,
// events and both legs' states (what Options.Publish was last given, or
// would have been).
func (v *Volume) Known() KnownState {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m.known
}

// Close drains in-flight I/O, stops resync and verify (a resync resumes at
// the next assembly from its checkpoint), flushes both legs, clears the
// bits of idle chunks, marks the volume clean on disk and closes the legs.
func (v *Volume) Close() error {
	v.mu.Lock()
	if v.closing {
		v.mu.Unlock()
		return ErrClosed
	}
	v.closing = true
	v.closingFlag.Store(true)
	close(v.stop)
	v.notify()
	for v.ops > 0 || v.reads.Load() > 0 {
		v.cond.Wait()
	}
	v.mu.Unlock()
	v.bg.Wait()
	v.mu.Lock()
	sel := [2]bool{v.m.active(0), v.m.active(1)}
	legs := v.legs
	dead := v.m.dead
	v.mu.Unlock()
	err := dead // a stopped (or fenced) volume is not flushed or marked clean
	if dead == nil {
		errs, _ := v.both(sel, legs, "flush", 0, Leg.Flush)
		v.mu.Lock()
		err = v.settle(sel, errs, "flush at close")
		v.mu.Unlock()
	}
	if err == nil && dead == nil {
		v.clearIdle(true)
	}
	v.mu.Lock()
	if v.m.dead == nil {
		v.m.markClean()
		if werr := v.waitSeq(v.m.commitSeq()); err == nil {
			err = werr
		}
	}
	v.mu.Unlock()
	v.mmp.release(err == nil)
	v.shutdownMeta()
	for i, l := range legs {
		if l != nil && v.outstanding[i].Load() == 0 {
			if cerr := l.Close(); err == nil {
				err = cerr
			}
		}
	}
	return err
}
