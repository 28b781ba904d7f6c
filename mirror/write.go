package mirror

import (
	"fmt"
	"time"
)

// One write's path, in order: admit (machine.beginWrite: no overlapping
// write in flight or held, no chunk being copied; its bits set), wait for
// its bits to be durable, call the legs (both at once, or inline one after
// the other on fast legs: inlineop.go), settle (fail the legs that failed,
// wait until their failure is durable), end it or hold its range while an
// abandoned call into a leg still in use may land (holdIfAbandoned).

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
// admission. A write over a held range (an abandoned write on the last
// leg, machine rule 8) waits at most the I/O timeout for it to return,
// then fails.
func (v *Volume) admitWriteAt(off, n int64) (t writeTicket, now time.Time, err error) {
	var heldSince time.Time
	for {
		if v.closing {
			return t, now, ErrClosed // Close began while this write waited its turn
		}
		now = v.clock.Now()
		var a admission
		if t, a = v.m.beginWrite(off, n, now); a == admitted {
			break
		}
		if a == waitHeldOff {
			if heldSince.IsZero() {
				heldSince = now
				v.wakeAt(v.opts.IOTimeout)
			} else if now.Sub(heldSince) >= v.opts.IOTimeout {
				return t, now, fmt.Errorf("write [%d, +%d): an earlier write to this range was abandoned after the I/O timeout and its leg call has not returned in another %v; refusing to write where it may still land (check the leg): %w",
					off, n, v.opts.IOTimeout, ErrTimeout)
			}
		}
		v.cond.Wait()
	}
	if t.err != nil {
		return t, now, t.err
	}
	v.ops++
	return t, now, nil
}

// wakeAt wakes the volume's waiters once d has passed (for a bounded
// wait on a condition no event may end).
func (v *Volume) wakeAt(d time.Duration) {
	go func() {
		sleep(v.clock, d, v.stop)
		v.mu.Lock()
		v.notify()
		v.mu.Unlock()
	}()
}

// writeLegs (called with mu held, returns with it released) does an
// admitted write: it waits for the write's bitmap bits, calls the legs in
// parallel, settles their results and ends the write. held: a leg call
// that did not answer still runs with f's buffer.
func (v *Volume) writeLegs(t writeTicket, off, n int64, op string, f func(Leg) error) (err error, held bool) {
	if err = v.waitSeq(t.seq); err != nil {
		v.endWriteLocked(off, n, time.Time{})
		return err, false
	}
	sel, legs := t.legs, v.legs
	for i := range 2 {
		// A leg that failed while the write waited for its bit (its
		// bitmap write hung past the timeout) is not called again:
		// settle waits for its failure to be durable (rule 3).
		sel[i] = sel[i] && v.m.active(i)
	}
	v.mu.Unlock()
	c := v.getCall()
	var errs [2]error
	if v.startLegs(c, sel, legs, n, f) {
		<-c.done
		if errs, held = v.callResult(c, sel, legs, op); !held {
			c = nil // recycled: no call into it was abandoned
		}
	} else {
		v.calls.Put(c)
		c = nil
	}
	v.mu.Lock()
	return v.finishWrite(sel, [2]*legCall{c, c}, errs, off, n, op, time.Time{}), held
}

// finishWrite (mu held, released on return) settles an admitted write's
// leg results (calls[i] carried the call to leg i) and ends it at end
// (zero: read the clock), or holds its range while an abandoned call into
// a leg still in use runs.
func (v *Volume) finishWrite(sel [2]bool, calls [2]*legCall, errs [2]error, off, n int64, op string, end time.Time) error {
	err := v.settle(sel, errs, op)
	if end.IsZero() {
		end = v.clock.Now()
	}
	if errs[0] != nil || errs[1] != nil {
		v.holdIfAbandoned(calls, sel, off, n, end)
	} else {
		v.m.endWrite(off, n, end)
	}
	v.ops--
	v.notify()
	v.mu.Unlock()
	v.appDone(end)
	return err
}

// endWriteLocked (mu held, released on return) ends an admitted write
// that called no leg, at end (zero: read the clock).
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

// StartWriteAt is WriteAt that reports its result to done instead of
// returning it; done is called exactly once, often before StartWriteAt
// returns. held: a leg call that did not answer in time still reads p, so
// p must not be reused. stuck: also, the goroutine that called
// StartWriteAt is the one blocked in that call and may never return.
func (v *Volume) StartWriteAt(p []byte, off int64, fua bool, done func(err error, held, stuck bool)) {
	n := int64(len(p))
	if err := v.checkRange(off, n); err != nil || n == 0 {
		done(err, false, false)
		return
	}
	v.appIO.Add(1)
	v.mu.Lock()
	t, now, err := v.admitWriteAt(off, n)
	if err != nil {
		v.mu.Unlock()
		v.appDone(time.Time{})
		done(err, false, false)
		return
	}
	if t.seq > v.m.durableSeq {
		// A bitmap update to wait for: a goroutine of its own (writers
		// waiting for the same metadata write share it).
		v.mu.Unlock()
		go func() {
			v.mu.Lock()
			err, held := v.writeLegs(t, off, n, "write", func(l Leg) error { return l.WriteAt(p, off, fua) })
			done(err, held, false)
		}()
		return
	}
	if n > inlineSize || !v.legsFast(t.legs) {
		// Slow legs or a large write: both legs at once, and the last
		// to answer finishes the write.
		legs := v.legs
		v.mu.Unlock()
		c := v.getCall()
		c.iob = legIO{write: true, p: p, off: off, fua: fua}
		c.io = &c.iob
		c.then = func(c *legCall) {
			errs, held := v.callResult(c, t.legs, legs, "write")
			if !held {
				c = nil // recycled: no call into it was abandoned
			}
			v.mu.Lock()
			err := v.finishWrite(t.legs, [2]*legCall{c, c}, errs, off, n, "write", time.Time{})
			done(err, held, false)
		}
		v.startLegs(c, t.legs, legs, n, func(l Leg) error { return l.WriteAt(p, off, fua) })
		return
	}
	o := v.getOp()
	o.p, o.off, o.fua, o.read, o.sel, o.legs, o.wdone = p, off, fua, false, t.legs, v.legs, done
	v.mu.Unlock()
	o.runWrite(now)
}

// runWrite calls the legs one after the other from t0 (the clock read at
// admission; the clock is read once more at the end, which is costly
// enough here to count: the legs share the measured time).
func (o *inlineOp) runWrite(t0 time.Time) {
	k := 0
	for i := range 2 {
		if o.sel[i] {
			if !o.call1(i, o.writeLeg, t0) {
				return
			}
			k++
		}
	}
	end := o.v.clock.Now()
	for i := range 2 {
		if o.sel[i] {
			o.v.observeLeg(i, end.Sub(t0)/time.Duration(k))
		}
	}
	o.finishWrite(false, [2]*legCall{&o.call, &o.call}, end)
}

func (o *inlineOp) writeLeg(l Leg) error { return l.WriteAt(o.p, o.off, o.fua) }

// finishWrite settles the inline write's leg results and reports it;
// calls[i] carried its call to leg i.
func (o *inlineOp) finishWrite(stuck bool, calls [2]*legCall, end time.Time) {
	v := o.v
	var errs [2]error
	for i := range 2 {
		if o.sel[i] {
			errs[i] = v.legErr(i, o.legs[i], "write", calls[i].res[i])
		}
	}
	if stuck {
		end = time.Time{} // the rescue waited: read the clock again
	}
	done := o.wdone
	v.mu.Lock()
	err := v.finishWrite(o.sel, calls, errs, o.off, int64(len(o.p)), "write", end)
	if !stuck {
		putOp(o)
	}
	done(err, stuck, stuck)
}

// rescueWrite takes over an inline write whose caller is stuck in its call
// to leg slot: the legs after it are called from here.
func (o *inlineOp) rescueWrite(slot int) {
	v := o.v
	var sel [2]bool
	for i := slot + 1; i < 2; i++ {
		sel[i] = o.sel[i]
	}
	calls := [2]*legCall{&o.call, &o.call}
	if sel[0] || sel[1] {
		c := v.getCall()
		if v.startLegs(c, sel, o.legs, 0, o.writeLeg) {
			<-c.done
			for i := slot + 1; i < 2; i++ {
				if sel[i] {
					calls[i] = c // its result and abandoned-call entry are in c
				}
			}
			abandoned := false
			for i := range 2 {
				abandoned = abandoned || (sel[i] && c.res[i] == errNoAnswer)
			}
			if !abandoned {
				defer v.calls.Put(c) // after finishWrite read it
			}
		}
	}
	o.finishWrite(true, calls, time.Time{})
}
