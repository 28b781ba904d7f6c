package mirror

import "time"

// Starting I/O without waiting, and running fast legs inline.
//
// StartReadAt and StartWriteAt report the end of an I/O to a callback
// instead of returning it, so a server (package nbd) can keep reading
// requests while slow legs work, without a goroutine waiting per request.
//
// When a leg answers in microseconds (page cache, tmpfs) a goroutine
// hand-off costs more than the call itself, so small I/O to such legs runs
// on the caller's goroutine: a write calls one leg and then the other, a
// read calls its leg, and the callback runs before Start returns. Each
// inline call is still listed with its slot's watchdog. If a leg hangs,
// the caller is stuck in that call, maybe for good; the watchdog's answer
// then hands the I/O to a rescue goroutine, which calls the remaining leg,
// fails the hung one (durably, as for any leg that misses a write), and
// runs the callback with stuck set: the caller's goroutine may never come
// back, and the caller's buffer is still held by the hung call. A caller
// stuck that way abandons the I/O when (if) its leg call returns: the
// answer of each leg is taken once, by the caller or by the watchdog,
// never both (legCall.answer).

// inlineMax is the moving average of a leg's call time under which its
// small I/O runs inline: about what a goroutine hand-off costs here.
const inlineMax = 10 * time.Microsecond

// inlineSize is the largest I/O that runs inline. Larger ones gain from
// calling both legs at once.
const inlineSize = 64 << 10

// observeLeg folds the duration of one application I/O call to slot's leg
// into its moving average.
func (v *Volume) observeLeg(slot int, d time.Duration) {
	old := v.legTime[slot].Load()
	v.legTime[slot].Store(old - old/8 + int64(d)/8)
}

// legsFast (mu held): every selected leg answers small I/O in
// microseconds (an AsyncLeg never counts: it waits on the network).
func (v *Volume) legsFast(sel [2]bool) bool {
	for i := range 2 {
		if !sel[i] {
			continue
		}
		if _, async := v.legs[i].(AsyncLeg); async || v.legTime[i].Load() >= int64(inlineMax) {
			return false
		}
	}
	return true
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
			v.mu.Lock()
			err := v.settle(t.legs, errs, "write")
			v.endWriteLocked(off, n, time.Time{})
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

// inlineOp is a read or write whose leg calls run on the caller's
// goroutine (see the top of this file).
type inlineOp struct {
	v    *Volume
	call legCall // the watchdog entries; call.rescue is o.rescue
	p    []byte
	off  int64
	fua  bool
	read bool
	slot int     // read: the leg read
	sel  [2]bool // write: the legs written
	legs [2]Leg
	// Exactly one is set.
	wdone func(err error, held, stuck bool)
	rdone func(data []byte, err error, held, stuck bool)
}

func (v *Volume) getOp() *inlineOp {
	o, _ := v.inlineOps.Get().(*inlineOp)
	if o == nil {
		o = &inlineOp{v: v}
		o.call.rescue = o.rescue
	}
	return o
}

// putOp recycles o once nothing refers to it (never after a rescue: the
// stuck caller may still touch it).
func putOp(o *inlineOp) {
	o.p, o.legs, o.wdone, o.rdone = nil, [2]Leg{}, nil, nil
	o.v.inlineOps.Put(o)
}

// call1 runs one leg call inline under the watchdog, with the deadline
// counted from t0. It reports false when the watchdog answered first: the
// rescue owns the operation and the caller must forget it.
func (o *inlineOp) call1(slot int, f func(Leg) error, t0 time.Time) bool {
	v, c := o.v, &o.call
	e := &c.ent[slot]
	e.call, e.slot = c, slot
	c.res[slot] = nil
	c.answered[slot].Store(false)
	v.outstanding[slot].Add(1)
	v.wd[slot].add(e, t0.Add(v.opts.IOTimeout), v.clock, v.opts.IOTimeout)
	err := f(o.legs[slot])
	v.outstanding[slot].Add(-1)
	return v.wd[slot].done(e, err)
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
	o.finishWrite(false, end)
}

func (o *inlineOp) writeLeg(l Leg) error { return l.WriteAt(o.p, o.off, o.fua) }
func (o *inlineOp) readLeg(l Leg) error  { return l.ReadAt(o.p, o.off) }

// finishWrite settles the write's leg results and reports it.
func (o *inlineOp) finishWrite(stuck bool, end time.Time) {
	v := o.v
	var errs [2]error
	for i := range 2 {
		if o.sel[i] {
			errs[i] = v.legErr(i, o.legs[i], "write", o.call.res[i])
		}
	}
	n := int64(len(o.p))
	v.mu.Lock()
	err := v.settle(o.sel, errs, "write")
	if stuck {
		end = time.Time{} // the rescue waited: read the clock again
	}
	v.endWriteLocked(o.off, n, end)
	done := o.wdone
	if !stuck {
		putOp(o)
	}
	done(err, stuck, stuck)
}

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

// rescue takes over an inline operation whose caller is stuck in its call
// to leg slot (the watchdog answered that call with errNoAnswer).
func (o *inlineOp) rescue(slot int) {
	v := o.v
	if o.read {
		buf := alignedBuf(len(o.p))
		err, _ := v.readRecover(slot, buf, o.off, v.legErr(slot, o.legs[slot], "read", errNoAnswer))
		v.readDone()
		v.appDone(time.Time{})
		o.rdone(buf, err, true, true)
		return
	}
	var sel [2]bool
	for i := slot + 1; i < 2; i++ {
		sel[i] = o.sel[i]
	}
	errs, _ := v.both(sel, o.legs, "write", 0, o.writeLeg)
	for i := slot + 1; i < 2; i++ {
		if sel[i] {
			o.call.res[i] = errs[i]
		}
	}
	o.finishWrite(true, time.Time{})
}
