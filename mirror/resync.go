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
	src, dst := v.m.startResync()
	v.resync = resyncState{running: true, src: src, dst: dst, total: v.m.needBytes(v.size), started: v.clock.Now()}
	v.log.Info("resync started", "from", src, "to", dst, "bytes", v.resync.total)
	v.bg.Add(1)
	go v.resyncLoop(src, dst)
	v.notify()
	return nil
}

func (v *Volume) stopped() bool {
	select {
	case <-v.stop:
		return true
	default:
		return false
	}
}

func (v *Volume) resyncLoop(src, dst int) {
	defer v.bg.Done()
	err := v.runResync(src, dst)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.resync.running = false
	if err != nil {
		v.log.Warn("resync stopped", "err", err)
	}
	v.notify()
}

func (v *Volume) runResync(src, dst int) error {
	buf := alignedBuf(int(v.chunk))
	v.mu.Lock()
	c := v.m.checkpoint
	v.mu.Unlock()
	var batch []int64
	var stamps []uint64
	limiter := newRateLimiter(v.clock)
	for {
		if v.stopped() {
			return v.commitBatch(src, dst, batch, stamps, c)
		}
		v.mu.Lock()
		if v.m.target() != dst || v.m.source() != src || v.m.dead != nil {
			v.mu.Unlock()
			return errors.New("leg states changed")
		}
		next := v.m.nextNeed(c)
		v.mu.Unlock()
		if next < 0 {
			break
		}
		// Wrapped past the end: record what we have before restarting at 0.
		if next < c && len(batch) > 0 {
			if err := v.commitBatch(src, dst, batch, stamps, next); err != nil {
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
		stamp, err := v.copyChunk(c, src, dst, false, buf)
		if err != nil {
			v.failFromCopy(err)
			return err
		}
		batch, stamps = append(batch, c), append(stamps, stamp)
		c++
		v.mu.Lock()
		v.resync.done += min(v.chunk, v.size-(c-1)*v.chunk)
		v.resync.rate = limiter.observed()
		v.mu.Unlock()
		if len(batch) >= resyncBatch {
			if err := v.commitBatch(src, dst, batch, stamps, c); err != nil {
				return err
			}
			batch, stamps = batch[:0], stamps[:0]
		}
	}
	if err := v.commitBatch(src, dst, batch, stamps, c); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
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
// bits may be cleared) and the checkpoint.
func (v *Volume) commitBatch(src, dst int, batch []int64, stamps []uint64, checkpoint int64) error {
	if len(batch) == 0 {
		return nil
	}
	v.mu.Lock()
	legs := v.legs
	v.mu.Unlock()
	sel := [2]bool{true, true}
	errs, _ := v.both(sel, legs, "flush", 0, Leg.Flush)
	if errs[0] != nil || errs[1] != nil {
		v.mu.Lock()
		defer v.mu.Unlock()
		_ = v.settle(sel, errs, "resync flush")
		return errors.Join(errs[0], errs[1])
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.m.copied(batch, stamps, min(checkpoint, v.m.nchunks))
	v.log.Debug("resync batch recorded", "chunks", fmt.Sprint(batch), "checkpoint", checkpoint, "nextSeq", v.m.nextSeq)
	v.notify()
	return nil
}

// failFromCopy fails the leg a copy error came from.
func (v *Volume) failFromCopy(err error) {
	var le *LegError
	if !errors.As(err, &le) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ferr := v.m.failLeg(le.Slot, err.Error()); ferr == nil {
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

// readdPending (mu held): AutoReAdd may still bring the missing leg back.
func (v *Volume) readdPending() bool {
	if !v.opts.AutoReAdd || v.closing {
		return false
	}
	for i := range 2 {
		if !v.m.active(i) && !v.parked[i] && (v.legs[i] != nil || v.specs[i] != "") {
			return true
		}
	}
	return false
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
