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
}

// answer records slot's result unless it was answered already; it reports
// whether it did. After the last answer the caller owns c again.
func (c *legCall) answer(slot int, err error) bool {
	if !c.answered[slot].CompareAndSwap(false, true) {
		return false
	}
	c.res[slot] = err
	if c.remaining.Add(-1) == 0 {
		c.done <- struct{}{}
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
}

// add lists e with its deadline and starts or wakes the watchdog
// goroutine when it is not already watching.
func (w *watchdog) add(e *wdEntry, deadline time.Time, clock Clock) {
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
	start, wake := !w.running, w.running && w.idle
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
		go w.run(clock)
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
func (w *watchdog) done(e *wdEntry, err error) {
	w.mu.Lock()
	if e.listed {
		w.unlink(e)
	}
	exit := w.stopped && w.head == nil && w.running
	w.mu.Unlock()
	if exit {
		w.poke()
	}
	e.call.answer(e.slot, err) // last touch of the call by this goroutine
}

// run answers every call past its deadline with errNoAnswer, sleeping
// until the oldest deadline.
func (w *watchdog) run(clock Clock) {
	for {
		w.mu.Lock()
		now := clock.Now()
		for w.head != nil && !now.Before(w.head.deadline) {
			e := w.head
			w.unlink(e)
			e.call.answer(e.slot, errNoAnswer)
		}
		if w.head == nil {
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
		d := w.head.deadline.Sub(now)
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
	return v.both(sel, legs, op, f)[slot]
}

// both runs f on the selected legs in parallel, each call in its own
// goroutine so that a hung leg cannot hold the caller past the I/O
// timeout, and returns each leg's result (ErrTimeout for no answer).
func (v *Volume) both(sel [2]bool, legs [2]Leg, op string, f func(Leg) error) [2]error {
	c, _ := v.calls.Get().(*legCall)
	if c == nil {
		c = &legCall{done: make(chan struct{}, 1)}
	}
	n := int32(0)
	for i := range 2 {
		if sel[i] {
			n++
			c.res[i] = nil
			c.answered[i].Store(false)
		}
	}
	if n == 0 {
		v.calls.Put(c)
		return [2]error{}
	}
	c.remaining.Store(n)
	deadline := v.clock.Now().Add(v.opts.IOTimeout)
	for i := range 2 {
		if !sel[i] {
			continue
		}
		e := &c.ent[i]
		e.call, e.slot = c, i
		v.outstanding[i].Add(1)
		v.wd[i].add(e, deadline, v.clock)
		go func() {
			err := f(legs[i])
			v.outstanding[i].Add(-1)
			v.wd[i].done(e, err)
		}()
	}
	<-c.done
	var errs [2]error
	reuse := true
	for i := range 2 {
		switch err := c.res[i]; {
		case !sel[i] || err == nil:
		case err == errNoAnswer:
			reuse = false // the leg's goroutine still holds c
			errs[i] = &LegError{Slot: i, Name: legs[i].Name(), Op: op, Err: fmt.Errorf("no answer within %v: %w", v.opts.IOTimeout, ErrTimeout)}
		default:
			errs[i] = &LegError{Slot: i, Name: legs[i].Name(), Op: op, Err: err}
		}
	}
	if reuse {
		v.calls.Put(c)
	}
	return errs
}
