package mirror

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Leg I/O under the I/O timeout, without a timer per I/O.
//
// Every leg call runs in its own goroutine (so a hung leg never holds the
// caller) and is entered, with its deadline, in its slot's watchdog list
// (oldest first). Each selected slot of a legCall is answered once: by the
// goroutine when the leg answers, or by the watchdog when the deadline
// (start + IOTimeout) passed first (answered[slot] decides); the last
// answer wakes the caller. The watchdog goroutine sleeps until the oldest
// deadline, idles while no call is in flight and exits after Close, so
// the hot path has no timer, no select and one wakeup per call.

// errNoAnswer is the watchdog's answer for a leg call past its deadline.
var errNoAnswer = errors.New("no answer")

// legCall is one call of both: each selected slot is answered once (by
// its leg or by the watchdog), and the last answer wakes the caller, so a
// write to two legs wakes its caller once.
type legCall struct {
	done      chan struct{} // capacity 1: the last answer never blocks
	res       [2]error
	answered  [2]atomic.Bool
	remaining atomic.Int32
	ent       [2]wdEntry
	// rescue is set for a call its caller runs inline (started.go): the
	// caller is not waiting on done but blocked in the leg call, so the
	// watchdog's answer hands the operation to rescue, in a new goroutine.
	rescue func(slot int)
	// then, when set, completes a started call (startLegs) instead of
	// waking a waiter on done; it runs on the goroutine of the last
	// answer when that is a leg call's own, else on a new one (the
	// watchdog's and an AsyncLeg's completions must not block), so it may
	// block.
	then func(c *legCall)
	// io describes the call for legs with an asynchronous API (AsyncLeg):
	// with it set they are started without a goroutine.
	io  *legIO
	iob legIO // what io points to
}

// legIO is a read or write for AsyncLeg.StartReadAt/StartWriteAt.
type legIO struct {
	write bool
	p     []byte
	off   int64
	fua   bool
}

// answer records slot's result unless it was answered already; it reports
// whether it did. The last answer completes the call: it wakes the waiting
// caller or runs then (in a new goroutine with spawn: the watchdog must not
// block). After the last answer the caller owns c again.
func (c *legCall) answer(slot int, err error, spawn bool) bool {
	if !c.answered[slot].CompareAndSwap(false, true) {
		return false
	}
	c.res[slot] = err
	if c.rescue == nil && c.remaining.Add(-1) == 0 {
		switch {
		case c.then == nil:
			c.done <- struct{}{}
		case spawn:
			go c.then(c)
		default:
			c.then(c)
		}
	}
	return true
}

// wdEntry is a leg call in flight in a watchdog list.
type wdEntry struct {
	call       *legCall
	slot       int
	deadline   time.Time
	prev, next *wdEntry
	listed     bool
	// Guarded by Volume.mu, for calls the watchdog answered (abandoned):
	// returned is set when the leg's call came back after all (lateReturn);
	// hold is the write whose range waits for that (machine rule 8).
	returned bool
	hold     *heldWrite
}

// heldWrite is a failed write whose range stays held until calls (the
// abandoned leg calls into it, on legs that still get I/O) returned.
type heldWrite struct {
	off, n int64
	calls  int
}

// arm readies e for a new call of c to slot.
func (e *wdEntry) arm(c *legCall, slot int) {
	e.call, e.slot, e.returned, e.hold = c, slot, false, nil
}

// lateReturn: the leg call of e returned after the watchdog had answered
// it. A write whose range waits for it is released when it was the last.
// Rare: it runs in its own goroutine and takes the volume's lock.
func (v *Volume) lateReturn(e *wdEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e.returned = true
	h := e.hold
	if h == nil {
		return
	}
	e.hold = nil
	if h.calls--; h.calls == 0 {
		v.m.releaseHeld(h.off, h.n, v.clock.Now())
		v.notify()
	}
}

// holdIfAbandoned (mu held) ends an admitted write of n bytes at off
// whose leg calls were answered in calls[i].ent[i] (sel: the legs
// called): when a call into a leg that still gets I/O was abandoned and
// has not returned, the range stays held until it does (machine rule 8);
// otherwise the write ends now.
func (v *Volume) holdIfAbandoned(calls [2]*legCall, sel [2]bool, off, n int64, end time.Time) {
	var h *heldWrite
	for i := range 2 {
		if !sel[i] || calls[i] == nil {
			continue
		}
		e := &calls[i].ent[i]
		if calls[i].res[i] != errNoAnswer || e.returned || !v.m.active(i) {
			continue // answered, back already, or its leg gets no more I/O
		}
		if h == nil {
			h = &heldWrite{off: off, n: n}
		}
		h.calls++
		e.hold = h
	}
	if h == nil {
		v.m.endWrite(off, n, end)
		return
	}
	v.log.Warn("a write's leg call did not return in time on a leg that stays in use: its range is held until it returns",
		"off", off, "bytes", n)
	v.m.holdWrite(off, n)
}

// copyWrite writes a copier's data (resync, read repair, verify repair;
// the chunk is locked, mu not held) to leg slot under the I/O timeout.
// When the leg does not answer, its call keeps running with p: the leg is
// failed here, and when it cannot be (the last working leg) the range
// stays held until the call returns (machine rule 8), so the copy never
// lands over a write acknowledged after the copier let go of the chunk.
func (v *Volume) copyWrite(slot int, leg Leg, p []byte, off int64, op string) error {
	var sel [2]bool
	var legs [2]Leg
	sel[slot], legs[slot] = true, leg
	c := v.getCall()
	v.startLegs(c, sel, legs, 0, func(l Leg) error { return l.WriteAt(p, off, false) })
	<-c.done
	errs, held := v.callResult(c, sel, legs, op)
	if !held {
		return errs[slot]
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m.active(slot) {
		if _, err := v.m.fail(slot, errs[slot]); err == nil {
			v.log.Warn("leg failed; volume continues degraded", "slot", slot, "op", op, "err", errs[slot])
		}
	}
	if e := &c.ent[slot]; !e.returned && v.m.active(slot) {
		n := int64(len(p))
		e.hold = &heldWrite{off: off, n: n, calls: 1}
		v.m.holdCopy(off, n)
		v.log.Warn("a copy's write did not return in time on the last working leg: its range is held until it returns", "off", off, "bytes", n)
	}
	v.notify()
	return errs[slot]
}

// watchdog times out the leg calls of one slot. Its goroutine starts with
// the first call and sleeps until the oldest deadline; with no call in
// flight it idles until add wakes it, and it exits once the volume closed
// (stop) and no call is left.
type watchdog struct {
	mu         sync.Mutex
	head, tail *wdEntry
	running    bool          // a watchdog goroutine exists
	idle       bool          // it waits for wake with no timer
	stopped    bool          // the volume closed: exit when the list is empty
	wake       chan struct{} // capacity 1
	// until is when the sleeping goroutine's timer fires. A call added
	// with a later deadline needs no wake-up: the timer comes first.
	until time.Time
	// quiet: no call was added since the list emptied. The goroutine
	// idles only after a whole timeout period without calls, so calls
	// made one at a time (inline) do not wake it each time.
	quiet bool
}

// add lists e with its deadline and starts or wakes the watchdog
// goroutine when it is not already watching.
func (w *watchdog) add(e *wdEntry, deadline time.Time, clock Clock, period time.Duration) {
	w.mu.Lock()
	e.deadline = deadline
	e.prev, e.next, e.listed = w.tail, nil, true
	if w.tail != nil {
		// Keep the list in deadline order: a caller that read the clock
		// just before another one listed its call may be a few
		// microseconds late, never early.
		if e.deadline.Before(w.tail.deadline) {
			e.deadline = w.tail.deadline
		}
		w.tail.next = e
	} else {
		w.head = e
	}
	w.tail = e
	w.quiet = false
	start, wake := !w.running, w.running && (w.idle || e.deadline.Before(w.until))
	if start {
		w.running = true
		if w.wake == nil {
			w.wake = make(chan struct{}, 1)
		}
	}
	if wake {
		w.idle = false
	}
	w.mu.Unlock()
	if start {
		go w.run(clock, period)
	}
	if wake {
		w.poke()
	}
}

func (w *watchdog) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// stop: the volume closed; the goroutine exits once no call is left.
func (w *watchdog) stop() {
	w.mu.Lock()
	w.stopped = true
	running := w.running
	w.mu.Unlock()
	if running {
		w.poke()
	}
}

// unlink removes e from the list (w.mu held).
func (w *watchdog) unlink(e *wdEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		w.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		w.tail = e.prev
	}
	e.prev, e.next, e.listed = nil, nil, false
}

// done: the leg answered e's call with err. The answer goes to the caller
// unless the watchdog answered first.
// It reports whether err was the answer (false: the watchdog's came first).
func (w *watchdog) done(e *wdEntry, err error) bool { return w.doneSpawn(e, err, false) }

// doneSpawn is done; with spawn a last answer runs the call's then in a
// new goroutine (for an AsyncLeg's completion, which must not block).
func (w *watchdog) doneSpawn(e *wdEntry, err error, spawn bool) bool {
	w.mu.Lock()
	if e.listed {
		w.unlink(e)
	}
	exit := w.stopped && w.head == nil && w.running
	w.mu.Unlock()
	if exit {
		w.poke()
	}
	return e.call.answer(e.slot, err, spawn) // last touch of the call by this goroutine
}

// run answers every call past its deadline with errNoAnswer, sleeping
// until the oldest deadline.
func (w *watchdog) run(clock Clock, period time.Duration) {
	for {
		w.mu.Lock()
		now := clock.Now()
		for w.head != nil && !now.Before(w.head.deadline) {
			e := w.head
			w.unlink(e)
			if c := e.call; c.answer(e.slot, errNoAnswer, true) && c.rescue != nil {
				go c.rescue(e.slot)
			}
		}
		if w.head == nil && (w.stopped || w.quiet) {
			if w.stopped {
				w.running = false
				w.mu.Unlock()
				return
			}
			w.idle = true
			w.mu.Unlock()
			<-w.wake
			continue
		}
		w.until = now.Add(period)
		if w.head != nil {
			w.until = w.head.deadline
		} else {
			w.quiet = true
		}
		d := w.until.Sub(now)
		w.mu.Unlock()
		t := clock.NewTimer(d)
		select {
		case <-t.C():
		case <-w.wake:
			t.Stop()
		}
	}
}

// legIO runs one leg operation under the I/O timeout. A leg that does not
// answer in time gets an ErrTimeout LegError; its call keeps running in
// the background and is counted in outstanding until it returns.
func (v *Volume) legIO(slot int, leg Leg, op string, f func(Leg) error) error {
	var sel [2]bool
	var legs [2]Leg
	sel[slot], legs[slot] = true, leg
	errs, _ := v.both(sel, legs, op, 0, f)
	return errs[slot]
}

// both runs f on the selected legs in parallel, each call in its own
// goroutine so that a hung leg cannot hold the caller past the I/O
// timeout, and returns each leg's result (ErrTimeout for no answer);
// held reports that a call which did not answer still runs (and holds
// f's buffer). For application I/O of n bytes (0: other I/O) each call's
// duration feeds the leg's moving average (started.go).
func (v *Volume) both(sel [2]bool, legs [2]Leg, op string, n int64, f func(Leg) error) (errs [2]error, held bool) {
	c := v.getCall()
	if !v.startLegs(c, sel, legs, n, f) {
		v.calls.Put(c)
		return errs, false
	}
	<-c.done
	return v.callResult(c, sel, legs, op)
}

func (v *Volume) getCall() *legCall {
	c, _ := v.calls.Get().(*legCall)
	if c == nil {
		c = &legCall{done: make(chan struct{}, 1)}
	}
	return c
}

// callResult turns c's answers into errors and recycles c unless a leg
// call that did not answer still holds it.
func (v *Volume) callResult(c *legCall, sel [2]bool, legs [2]Leg, op string) (errs [2]error, held bool) {
	for i := range 2 {
		if !sel[i] {
			continue
		}
		if c.res[i] == errNoAnswer {
			held = true // the leg's goroutine still holds c
		}
		errs[i] = v.legErr(i, legs[i], op, c.res[i])
	}
	if !held {
		c.then, c.io = nil, nil
		v.calls.Put(c)
	}
	return errs, held
}

// AsyncLeg is a Leg that starts reads and writes without blocking (an
// iSCSI LUN): done is called exactly once, from any goroutine, when the
// I/O ended, and must not block. The engine calls such legs without a
// goroutine per I/O.
type AsyncLeg interface {
	Leg
	StartReadAt(p []byte, off int64, done func(error))
	StartWriteAt(p []byte, off int64, fua bool, done func(error))
}

// startLegs starts f on the selected legs under the watchdog, each in its
// own goroutine (AsyncLeg legs through their own API when c.io says what
// to do), and reports false when no leg is selected. The last answer wakes
// c.done or runs c.then.
func (v *Volume) startLegs(c *legCall, sel [2]bool, legs [2]Leg, n int64, f func(Leg) error) bool {
	k := int32(0)
	for i := range 2 {
		if sel[i] {
			k++
			c.res[i] = nil
			c.answered[i].Store(false)
		}
	}
	if k == 0 {
		return false
	}
	c.remaining.Store(k)
	observe := n > 0 && n <= inlineSize
	start := v.clock.Now()
	deadline := start.Add(v.opts.IOTimeout)
	for i := range 2 {
		if !sel[i] {
			continue
		}
		e := &c.ent[i]
		e.arm(c, i)
		v.outstanding[i].Add(1)
		v.wd[i].add(e, deadline, v.clock, v.opts.IOTimeout)
		if a, ok := legs[i].(AsyncLeg); ok && c.io != nil {
			fin := func(err error) {
				v.outstanding[i].Add(-1)
				if !v.wd[i].doneSpawn(e, err, true) {
					go v.lateReturn(e)
				}
			}
			if c.io.write {
				a.StartWriteAt(c.io.p, c.io.off, c.io.fua, fin)
			} else {
				a.StartReadAt(c.io.p, c.io.off, fin)
			}
			continue
		}
		go func() {
			t0 := start
			if observe {
				t0 = v.clock.Now()
			}
			err := f(legs[i])
			if observe {
				v.observeLeg(i, v.clock.Now().Sub(t0))
			}
			v.outstanding[i].Add(-1)
			if !v.wd[i].done(e, err) {
				v.lateReturn(e)
			}
		}()
	}
	return true
}

// legErr turns the answer of slot's leg to a call into the error the
// engine reports: nil, ErrTimeout for no answer, or a LegError.
func (v *Volume) legErr(slot int, leg Leg, op string, res error) error {
	switch res.(type) {
	case nil, *LegError:
		return res
	}
	if res == errNoAnswer {
		return &LegError{Slot: slot, Name: leg.Name(), Op: op, Err: fmt.Errorf("no answer within %v: %w", v.opts.IOTimeout, ErrTimeout)}
	}
	return &LegError{Slot: slot, Name: leg.Name(), Op: op, Err: res}
}
