package mirror

import "time"

// Starting I/O without waiting, and running fast legs inline: the
// inlineOp. StartWriteAt is in write.go, StartReadAt in read.go.
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
	e.arm(c, slot)
	c.res[slot] = nil
	c.answered[slot].Store(false)
	v.outstanding[slot].Add(1)
	v.wd[slot].add(e, t0.Add(v.opts.IOTimeout), v.clock, v.opts.IOTimeout)
	err := f(o.legs[slot])
	v.outstanding[slot].Add(-1)
	if !v.wd[slot].done(e, err) {
		v.lateReturn(e) // the rescue owns the operation; its write may wait for this
		return false
	}
	return true
}

// rescue takes over an inline operation whose caller is stuck in its call
// to leg slot (the watchdog answered that call with errNoAnswer).
func (o *inlineOp) rescue(slot int) {
	if o.read {
		o.rescueRead(slot)
		return
	}
	o.rescueWrite(slot)
}
