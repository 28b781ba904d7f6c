package mirror

import (
	"errors"
	"fmt"
	"time"
)

// One read's path: pick the leg (machine.pickRead: only a leg that holds
// current data for the range; otherwise the less busy one, keeping
// sequential streams on one leg), call it (inline on fast legs), and on a
// read error retry on the other leg and rewrite the bad copy.

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
	if isFencing(rerr) {
		defer v.mu.Unlock()
		v.m.fence(rerr)
		v.notify()
		return v.m.dead, false
	}
	ok := v.m.readable(good, c0, c1)
	leg := v.legs[good]
	ep := v.m.epochs() // the repair goes to the bad leg of this attach only
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
		if _, err := v.m.fail(bad, rerr); err == nil {
			v.log.Warn("leg failed; volume continues degraded", "slot", bad, "err", rerr)
			v.notify()
		}
		return nil, false
	}
	buf := alignedBuf(int(v.chunk))
	for c := c0; c <= c1; c++ {
		if _, err := v.copyChunk(c, good, bad, true, buf, &ep); err != nil {
			if errors.Is(err, errStaleCopy) || errors.Is(err, ErrClosed) {
				break // the bad leg failed or was re-added meanwhile, or closing
			}
			v.mu.Lock()
			var le *LegError
			if errors.As(err, &le) && v.m.epochs() == ep {
				if _, ferr := v.m.fail(le.Slot, fmt.Errorf("rewriting a bad copy: %w", err)); ferr == nil {
					v.notify()
				}
			}
			v.mu.Unlock()
			break
		}
	}
	return nil, false
}

// StartReadAt is ReadAt that reports its result to done instead of
// returning it; done is called exactly once, often before StartReadAt
// returns. held: a leg call that did not answer in time may still write
// into p, which must then be dropped; the data of a successful read then
// comes in a fresh buffer (data; otherwise data is p). stuck: also, the
// goroutine that called StartReadAt is the one blocked in that call and
// may never return.
func (v *Volume) StartReadAt(p []byte, off int64, done func(data []byte, err error, held, stuck bool)) {
	n := int64(len(p))
	if err := v.checkRange(off, n); err != nil || n == 0 {
		done(p, err, false, false)
		return
	}
	v.appIO.Add(1)
	slot, leg, err := v.admitRead(off, n)
	if err != nil {
		v.appDone(time.Time{})
		done(p, err, false, false)
		return
	}
	if _, async := leg.(AsyncLeg); async || n > inlineSize || v.legTime[slot].Load() >= int64(inlineMax) {
		var sel [2]bool
		var legs [2]Leg
		sel[slot], legs[slot] = true, leg
		c := v.getCall()
		c.iob = legIO{p: p, off: off}
		c.io = &c.iob
		c.then = func(c *legCall) {
			errs, held := v.callResult(c, sel, legs, "read")
			data := p
			if held {
				data = alignedBuf(len(p)) // the hung call may still write into p
			}
			var err error
			if errs[slot] != nil {
				var rheld bool
				err, rheld = v.readRecover(slot, data, off, errs[slot])
				held = held || rheld // a hung retry still writes into data (the read failed)
			}
			v.readDone()
			v.appDone(time.Time{})
			done(data, err, held, false)
		}
		v.startLegs(c, sel, legs, n, func(l Leg) error { return l.ReadAt(p, off) })
		return
	}
	o := v.getOp()
	o.p, o.off, o.read, o.slot, o.rdone = p, off, true, slot, done
	o.legs[slot] = leg
	o.runRead()
}

func (o *inlineOp) readLeg(l Leg) error { return l.ReadAt(o.p, o.off) }

func (o *inlineOp) runRead() {
	t0 := o.v.clock.Now()
	if !o.call1(o.slot, o.readLeg, t0) {
		return
	}
	t1 := o.v.clock.Now()
	o.v.observeLeg(o.slot, t1.Sub(t0))
	v, p, off, done := o.v, o.p, o.off, o.rdone
	res, slot, leg := o.call.res[o.slot], o.slot, o.legs[o.slot]
	putOp(o)
	var err error
	var held bool // a hung retry still writes into p (the read failed)
	if res != nil {
		err, held = v.readRecover(slot, p, off, v.legErr(slot, leg, "read", res))
		t1 = time.Time{}
	}
	v.readDone()
	v.appDone(t1)
	done(p, err, held, false)
}

// rescueRead takes over an inline read whose caller is stuck in its call
// to leg slot: the read is retried on the other leg into a fresh buffer.
func (o *inlineOp) rescueRead(slot int) {
	v := o.v
	buf := alignedBuf(len(o.p))
	err, _ := v.readRecover(slot, buf, o.off, v.legErr(slot, o.legs[slot], "read", errNoAnswer))
	v.readDone()
	v.appDone(time.Time{})
	o.rdone(buf, err, true, true)
}
