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

	mu       sync.Mutex
	cond     *sync.Cond
	metaCond *sync.Cond    // wakes metaLoop only (when it has work or must stop)
	changed  chan struct{} // made by a ctx waiter, closed at the next state change
	m        *machine
	legs     [2]Leg         // leg objects by slot (a failed one is kept for AutoReAdd)
	specs    [2]string      // how each slot's leg is (re)opened
	tmpl     [2]*superblock // per-leg fixed superblock fields
	closing  bool
	metaStop bool
	adding   [2]bool // AddLeg in progress for the slot
	// parked marks a slot the operator failed: AutoReAdd leaves it alone
	// until the operator adds a leg again.
	parked [2]bool
	ops    int // application I/Os in flight
	resync resyncState
	verify verifyState

	wd          [2]watchdog     // times out each slot's leg calls (legio.go)
	calls       sync.Pool       // *legCall for reuse (per volume: its channels belong to the caller's synctest bubble)
	inlineOps   sync.Pool       // *inlineOp for reuse
	outstanding [2]atomic.Int64 // leg I/Os in flight, abandoned (timed out) ones included
	legTime     [2]atomic.Int64 // moving average of each leg's small application I/O, ns (inline.go)
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
		if !sel[i] || errs[i] == nil {
			continue
		}
		if firstErr == nil {
			firstErr = errs[i]
		}
		seq, err := v.m.failLeg(i, errs[i].Error())
		if err == nil {
			v.log.Warn("leg failed; volume continues degraded", "slot", i, "op", op, "err", errs[i])
		}
		wait = max(wait, seq)
	}
	ok := 0
	for i := range 2 {
		if v.m.legs[i] == legFailed {
			// Missed by this I/O (failed before it began, by a path that
			// did not wait, such as a read's rewrite, or failed meanwhile):
			// acknowledge only once the failure is durable (rule 3).
			wait = max(wait, v.m.failSeq[i])
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

func (v *Volume) write(off, n int64, op string, f func(Leg) error) (error, bool) {
	v.appIO.Add(1)
	v.mu.Lock()
	t, err := v.admitWrite(off, n)
	if err != nil {
		v.mu.Unlock()
		v.appDone(time.Time{})
		return err, false
	}
	return v.writeLegs(t, off, n, op, f)
}

// admitWrite (mu held) waits until n bytes at off may be written (no
// overlapping write in flight, no chunk locked by a copy), and enters the
// write in the machine. On success the write counts in ops until
// writeLegs or finishWrite ends it; the caller counted it in appIO.
func (v *Volume) admitWrite(off, n int64) (writeTicket, error) {
	t, _, err := v.admitWriteAt(off, n)
	return t, err
}

// admitWriteAt is admitWrite that also returns the clock's time at
// admission.
func (v *Volume) admitWriteAt(off, n int64) (t writeTicket, now time.Time, err error) {
	for ok := false; !ok; {
		if v.closing {
			return t, now, ErrClosed // Close began while this write waited its turn
		}
		now = v.clock.Now()
		if t, ok = v.m.beginWrite(off, n, now); !ok {
			v.cond.Wait()
		}
	}
	if t.err != nil {
		return t, now, t.err
	}
	v.ops++
	return t, now, nil
}

// writeLegs (called with mu held, returns with it released) does an
// admitted write: it waits for the write's bitmap bits, calls the legs in
// parallel, settles their results and ends the write. held: a leg call
// that did not answer still runs with f's buffer.
func (v *Volume) writeLegs(t writeTicket, off, n int64, op string, f func(Leg) error) (err error, held bool) {
	if err = v.waitSeq(t.seq); err == nil {
		sel, legs := t.legs, v.legs
		for i := range 2 {
			// A leg that failed while the write waited for its bit (its
			// bitmap write hung past the timeout) is not called again:
			// settle waits for its failure to be durable (rule 3).
			sel[i] = sel[i] && v.m.active(i)
		}
		v.mu.Unlock()
		var errs [2]error
		errs, held = v.both(sel, legs, op, n, f)
		v.mu.Lock()
		err = v.settle(sel, errs, op)
	}
	v.endWriteLocked(off, n, time.Time{})
	return err, held
}

// endWriteLocked (mu held, released on return) ends an admitted write at
// end (zero: read the clock).
func (v *Volume) endWriteLocked(off, n int64, end time.Time) {
	if end.IsZero() {
		end = v.clock.Now()
	}
	v.m.endWrite(off, n, end)
	v.ops--
	v.notify()
	v.mu.Unlock()
	v.appDone(end)
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

// ReadAt fills p from off. Chunks out of sync are read only from the
// up-to-date leg; a read error is retried on the other leg and the bad
// copy is rewritten.
func (v *Volume) ReadAt(p []byte, off int64) error {
	n := int64(len(p))
	if err := v.checkRange(off, n); err != nil || n == 0 {
		return err
	}
	v.appIO.Add(1)
	defer v.appDone(time.Time{})
	slot, leg, err := v.admitRead(off, n)
	if err != nil {
		return err
	}
	defer v.readDone()
	data, err, held := v.readLeg(slot, leg, p, off)
	if held && err == nil {
		copy(p, data) // the timed-out call may still write into p too
	}
	return err
}

// admitRead picks the leg to read n bytes at off from and counts the read
// in reads (readDone ends it).
func (v *Volume) admitRead(off, n int64) (int, Leg, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closing {
		return 0, nil, ErrClosed
	}
	slot, err := v.m.pickRead(off/v.chunk, (off+n-1)/v.chunk, off, n, [2]int64{v.outstanding[0].Load(), v.outstanding[1].Load()})
	if err != nil {
		return 0, nil, err
	}
	v.reads.Add(1)
	return slot, v.legs[slot], nil
}

// readLeg reads p at off from leg slot, recovering from its failure on
// the other leg. data is p, or a fresh buffer when held: the leg did not
// answer and its call may still write into p.
func (v *Volume) readLeg(slot int, leg Leg, p []byte, off int64) (data []byte, err error, held bool) {
	var sel [2]bool
	var legs [2]Leg
	sel[slot], legs[slot] = true, leg
	errs, held := v.both(sel, legs, "read", int64(len(p)), func(l Leg) error { return l.ReadAt(p, off) })
	if errs[slot] == nil {
		return p, nil, false
	}
	data = p
	if held {
		data = alignedBuf(len(p))
	}
	err, rheld := v.readRecover(slot, data, off, errs[slot])
	return data, err, held || rheld
}

// readDone ends a read; the last one wakes a Close waiting to drain.
func (v *Volume) readDone() {
	if v.reads.Add(-1) == 0 && v.closingFlag.Load() {
		v.mu.Lock()
		v.notify()
		v.mu.Unlock()
	}
}

// readRecover retries a failed read on the other leg and repairs the bad
// copy (or fails the leg when it timed out or the repair fails). held: the
// retry did not answer and its call may still write into p (the read then
// failed).
func (v *Volume) readRecover(bad int, p []byte, off int64, rerr error) (err error, held bool) {
	good := 1 - bad
	c0, c1 := off/v.chunk, (off+int64(len(p))-1)/v.chunk
	v.mu.Lock()
	ok := v.m.readable(good, c0, c1)
	leg := v.legs[good]
	v.mu.Unlock()
	if !ok {
		return rerr, false
	}
	v.log.Warn("read error; retrying on the other leg", "slot", bad, "err", rerr)
	var sel [2]bool
	var legs [2]Leg
	sel[good], legs[good] = true, leg
	errs, held := v.both(sel, legs, "read", 0, func(l Leg) error { return l.ReadAt(p, off) })
	if err := errs[good]; err != nil {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.settle(sel, [2]error{err, err}, "read"), held
	}
	if errors.Is(rerr, ErrTimeout) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if _, err := v.m.failLeg(bad, rerr.Error()); err == nil {
			v.log.Warn("leg failed; volume continues degraded", "slot", bad, "err", rerr)
			v.notify()
		}
		return nil, false
	}
	buf := alignedBuf(int(v.chunk))
	for c := c0; c <= c1; c++ {
		if _, err := v.copyChunk(c, good, bad, true, buf); err != nil {
			v.mu.Lock()
			var le *LegError
			if errors.As(err, &le) {
				if _, ferr := v.m.failLeg(le.Slot, "rewriting a bad copy: "+err.Error()); ferr == nil {
					v.notify()
				}
			}
			v.mu.Unlock()
			break
		}
	}
	return nil, false
}

// copyChunk copies chunk c from leg `from` to leg `to` under the chunk
// lock (no write to c runs meanwhile). With mark the chunk's bit is made
// durable first (a repair of an in-sync chunk). It returns the chunk's
// stamp at unlock for machine.copied.
func (v *Volume) copyChunk(c int64, from, to int, mark bool, buf []byte) (uint64, error) {
	off := c * v.chunk
	n := min(v.chunk, v.size-off)
	v.mu.Lock()
	if !v.m.lockChunk(c) {
		for !v.m.chunkIdle(c) {
			v.cond.Wait()
		}
	}
	var err error
	if mark {
		err = v.waitSeq(v.m.markRepair(c, v.clock.Now()))
	}
	lf, lt := v.legs[from], v.legs[to]
	v.mu.Unlock()
	if err == nil {
		err = v.legIO(from, lf, "read", func(l Leg) error { return l.ReadAt(buf[:n], off) })
	}
	if err == nil {
		err = v.legIO(to, lt, "write", func(l Leg) error { return l.WriteAt(buf[:n], off, false) })
	}
	v.mu.Lock()
	stamp := v.m.unlockChunk(c, v.clock.Now())
	v.notify()
	v.mu.Unlock()
	return stamp, err
}

// FailLeg marks leg slot failed (operator): it gets no more I/O and the
// volume continues degraded. The last working leg cannot be failed.
func (v *Volume) FailLeg(slot int) error {
	if slot != 0 && slot != 1 {
		return fmt.Errorf("slot %d: must be 0 or 1", slot)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.m.active(slot) {
		return fmt.Errorf("leg %d is not active", slot)
	}
	seq, err := v.m.failLeg(slot, "failed by operator")
	if err != nil {
		return err
	}
	v.parked[slot] = true
	v.log.Warn("leg failed by operator", "slot", slot)
	return v.waitSeq(seq)
}
