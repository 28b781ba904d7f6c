package mirror

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// resyncState is the progress of the running resync (guarded by Volume.mu).
type resyncState struct {
	running     bool
	src, dst    int
	done, total int64 // bytes
	started     time.Time
	rate        float64 // bytes/s, smoothed
}

// resyncBatch is how many copied chunks are flushed and recorded at once.
const resyncBatch = 16

// Resync starts (or resumes) a resync when a leg is out of sync. It
// returns at once; progress is in Status, completion via WaitInSync.
func (v *Volume) Resync() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closing {
		return ErrClosed
	}
	if v.resync.running || v.m.target() < 0 {
		return nil
	}
	if v.m.source() < 0 {
		return fmt.Errorf("resync: no in-sync leg to copy from: %w", ErrNoLeg)
	}
	v.startResyncLocked()
	return nil
}

// startResyncLocked (mu held) starts the copy loop for the current attach
// of both legs (their epochs).
func (v *Volume) startResyncLocked() {
	src, dst := v.m.startResync()
	v.resync = resyncState{running: true, src: src, dst: dst, total: v.m.needBytes(v.size), started: v.clock.Now()}
	v.log.Info("resync started", "from", src, "to", dst, "bytes", v.resync.total)
	v.bg.Add(1)
	go v.resyncLoop(src, dst, v.m.epochs())
	v.notify()
}

// errStaleCopy: the legs changed (a leg failed or was re-attached) while
// a copy loop ran; what it copied is not recorded.
var errStaleCopy = errors.New("leg states changed")

func (v *Volume) stopped() bool {
	select {
	case <-v.stop:
		return true
	default:
		return false
	}
}

func (v *Volume) resyncLoop(src, dst int, ep [2]uint64) {
	defer v.bg.Done()
	err := v.runResync(src, dst, ep)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.resync.running = false
	if err != nil {
		v.log.Warn("resync stopped", "err", err)
	}
	if errors.Is(err, errStaleCopy) && !v.closing && v.m.dead == nil && v.m.target() >= 0 && v.m.source() >= 0 {
		v.startResyncLocked() // a leg was re-added meanwhile: copy to it from its own start
		return
	}
	v.notify()
}

// runResync copies the chunks the target needs, in batches recorded only
// under the attach epochs ep it was started with (finding 3 of issue 10:
// a batch copied to a leg that was failed and re-added meanwhile, or
// replaced, is never recorded).
func (v *Volume) runResync(src, dst int, ep [2]uint64) error {
	buf := alignedBuf(int(v.chunk))
	v.mu.Lock()
	c := v.m.checkpoint
	v.mu.Unlock()
	var batch []int64
	var stamps []uint64
	limiter := newRateLimiter(v.clock)
	for {
		if v.stopped() {
			return v.commitBatch(batch, stamps, c, ep)
		}
		v.mu.Lock()
		if v.m.target() != dst || v.m.source() != src || v.m.dead != nil || v.m.epochs() != ep {
			v.mu.Unlock()
			return errStaleCopy
		}
		next := v.m.nextNeed(c)
		v.mu.Unlock()
		if next < 0 {
			break
		}
		// Wrapped past the end: record what we have before restarting at 0.
		if next < c && len(batch) > 0 {
			if err := v.commitBatch(batch, stamps, next, ep); err != nil {
				return err
			}
			batch, stamps = batch[:0], stamps[:0]
			c = next
			continue // the batch left the resync set: look again
		}
		c = next
		// Yield to application I/O: the floor while it runs, the ceiling
		// (0: unlimited) when the volume is idle.
		rate := v.opts.ResyncMaxRate
		if v.appBusy() {
			rate = v.opts.ResyncMinRate
		}
		if !limiter.wait(rate, min(v.chunk, v.size-c*v.chunk), v.stop) {
			continue
		}
		stamp, err := v.copyChunk(c, src, dst, false, buf, &ep)
		if errors.Is(err, errStaleCopy) || errors.Is(err, ErrClosed) {
			return err
		}
		if err != nil {
			v.failFromCopy(err, ep)
			return err
		}
		batch, stamps = append(batch, c), append(stamps, stamp)
		c++
		v.mu.Lock()
		v.resync.done += min(v.chunk, v.size-(c-1)*v.chunk)
		v.resync.rate = limiter.observed()
		v.mu.Unlock()
		if len(batch) >= resyncBatch {
			if err := v.commitBatch(batch, stamps, c, ep); err != nil {
				return err
			}
			batch, stamps = batch[:0], stamps[:0]
		}
	}
	if err := v.commitBatch(batch, stamps, c, ep); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m.epochs() != ep {
		return errStaleCopy
	}
	if v.m.needCount > 0 {
		return nil // writes re-marked chunks meanwhile? (cannot happen) — next Resync picks them up
	}
	seq := v.m.resyncFinished()
	if seq == 0 {
		return nil
	}
	v.log.Info("resync complete", "leg", dst)
	return v.waitSeq(seq)
}

// commitBatch flushes both legs, then records the copied chunks (their
// bits may be cleared) and the checkpoint, unless a leg was re-attached
// since the copies (epochs ep): then the flush may have gone to another
// leg object and nothing is recorded.
func (v *Volume) commitBatch(batch []int64, stamps []uint64, checkpoint int64, ep [2]uint64) error {
	if len(batch) == 0 {
		return nil
	}
	v.mu.Lock()
	legs := v.legs
	if v.m.epochs() != ep || v.m.source() < 0 {
		// A leg failed (or is being added) since the copies: the batch
		// will not count, and a failed slot gets no I/O.
		v.mu.Unlock()
		return errStaleCopy
	}
	v.mu.Unlock()
	sel := [2]bool{true, true}
	errs, _ := v.both(sel, legs, "flush", 0, Leg.Flush)
	if errs[0] != nil || errs[1] != nil {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.m.epochs() != ep {
			return errStaleCopy // the flush went to a leg object that is gone
		}
		_ = v.settle(sel, errs, "resync flush")
		return errors.Join(errs[0], errs[1])
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.m.copied(batch, stamps, min(checkpoint, v.m.nchunks), ep) {
		return errStaleCopy
	}
	v.log.Debug("resync batch recorded", "chunks", fmt.Sprint(batch), "checkpoint", checkpoint, "nextSeq", v.m.nextSeq)
	v.notify()
	return nil
}

// failFromCopy fails the leg a copy error came from, unless the copy was
// made under an earlier attach (epochs ep): the error then belongs to a
// leg object that is gone, not to the slot's current leg.
func (v *Volume) failFromCopy(err error, ep [2]uint64) {
	var le *LegError
	if !errors.As(err, &le) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m.epochs() != ep || !v.m.active(le.Slot) {
		return
	}
	if _, ferr := v.m.fail(le.Slot, err); ferr == nil {
		v.log.Warn("leg failed during copy", "slot", le.Slot, "err", err)
	}
	v.notify()
}

// WaitInSync waits until no leg is out of sync (both legs in sync). It
// returns an error when the volume is degraded and nothing can bring the
// leg back by itself (AutoReAdd off, or the operator failed the leg).
func (v *Volume) WaitInSync(ctx context.Context) error {
	for {
		v.mu.Lock()
		ch := v.changedChan()
		switch {
		case v.m.dead != nil:
			v.mu.Unlock()
			return v.m.dead
		case v.m.bothInSync() && v.m.needCount == 0 && !v.resync.running:
			v.mu.Unlock()
			return nil
		case (!v.m.active(0) || !v.m.active(1)) && !v.readdPending():
			v.mu.Unlock()
			return fmt.Errorf("volume is degraded (a leg is failed or missing): add a leg to resync: %w", ErrNoLeg)
		case !v.resync.running && v.m.target() >= 0 && !v.closing:
			v.mu.Unlock()
			if err := v.Resync(); err != nil {
				return err
			}
			continue
		case v.closing:
			v.mu.Unlock()
			return ErrClosed
		}
		v.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// rateLimiter paces copies to a byte rate on the injected clock.
type rateLimiter struct {
	clock   Clock
	start   time.Time
	bytes   int64
	lastNow time.Time
}

func newRateLimiter(c Clock) *rateLimiter {
	now := c.Now()
	return &rateLimiter{clock: c, start: now, lastNow: now}
}

// wait blocks until n more bytes fit the rate (0: unlimited). It returns
// false when stop closed.
func (r *rateLimiter) wait(rate, n int64, stop <-chan struct{}) bool {
	now := r.clock.Now()
	if rate <= 0 {
		r.bytes += n
		r.lastNow = now
		return true
	}
	// Budget restarts after an idle gap so a burst after a pause is not huge.
	if now.Sub(r.lastNow) > time.Second {
		r.start, r.bytes = now, 0
	}
	due := r.start.Add(time.Duration(float64(r.bytes+n) / float64(rate) * float64(time.Second)))
	if d := due.Sub(now); d > 0 {
		if !sleep(r.clock, d, stop) {
			return false
		}
	}
	r.bytes += n
	r.lastNow = r.clock.Now()
	return true
}

func (r *rateLimiter) observed() float64 {
	el := r.clock.Now().Sub(r.start).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(r.bytes) / el
}

// copyChunk copies chunk c from leg `from` to leg `to` under the chunk
// lock (no write to c runs meanwhile). With mark the chunk's bit is made
// durable first (a repair of an in-sync chunk). It returns the chunk's
// stamp at unlock for machine.copied. With ep, nothing is copied (errStaleCopy)
// unless both legs are still active under those epochs.
func (v *Volume) copyChunk(c int64, from, to int, mark bool, buf []byte, ep *[2]uint64) (uint64, error) {
	off := c * v.chunk
	n := min(v.chunk, v.size-off)
	v.mu.Lock()
	var err error
	if !v.m.lockChunk(c) {
		// Writes in flight drain; a held one (rule 8) may take long: Close
		// does not wait for it, nor does a copy that no longer counts.
		err = v.waitChunkIdle(c, func() error {
			if ep != nil && (v.m.epochs() != *ep || !v.m.active(from) || !v.m.active(to)) {
				return errStaleCopy
			}
			return nil
		})
	}
	if ep != nil && err == nil && (v.m.epochs() != *ep || !v.m.active(from) || !v.m.active(to)) {
		err = errStaleCopy
	}
	if mark && err == nil {
		err = v.waitSeq(v.m.markRepair(c, v.clock.Now()))
	}
	lf, lt := v.legs[from], v.legs[to]
	v.mu.Unlock()
	if err == nil {
		err = v.legIO(from, lf, "read", func(l Leg) error { return l.ReadAt(buf[:n], off) })
	}
	if err == nil && ep != nil {
		// Check the attach again, and count the write as a call into the
		// target's slot before the lock is released: the slot cannot be
		// re-attached between the check and the call, whose data (of the
		// earlier attach) could otherwise land on the new leg later.
		v.mu.Lock()
		if v.m.epochs() != *ep || !v.m.active(to) {
			err = errStaleCopy
		} else {
			v.outstanding[to].Add(1)
			defer v.outstanding[to].Add(-1)
		}
		v.mu.Unlock()
	}
	if err == nil {
		err = v.copyWrite(to, lt, buf[:n], off, "write")
	}
	v.mu.Lock()
	stamp := v.m.unlockChunk(c)
	v.notify()
	v.mu.Unlock()
	return stamp, err
}

// waitChunkIdle (mu held) waits until the writes in flight in chunk c,
// which a copier has locked, drain. A write whose leg call was abandoned
// on the last working leg stays in flight (held, rule 8) until that call
// returns, maybe never: the wait ends early with ErrClosed when the
// volume closes, or with gone's error once the copy no longer counts (a
// leg failed or was re-attached: the failure that made the write held
// ends a copier's wait here, so its caller never hangs on the hold).
func (v *Volume) waitChunkIdle(c int64, gone func() error) error {
	for !v.m.chunkIdle(c) {
		if v.closing {
			return ErrClosed
		}
		if err := gone(); err != nil {
			return err
		}
		v.cond.Wait()
	}
	return nil
}
