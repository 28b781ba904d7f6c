package legtest

import (
	"fmt"
	"sync"
)

// Op is a kind of leg operation a FaultLeg can break.
type Op int

const (
	OpRead Op = iota
	OpWrite
	OpFlush
	OpZero
	numOps
)

func (o Op) String() string {
	return [...]string{"read", "write", "flush", "zero"}[o]
}

// Leg is the interface FaultLeg wraps (the same as mirror.Leg).
type Leg interface {
	Name() string
	Size() int64
	ReadAt(p []byte, off int64) error
	WriteAt(p []byte, off int64, fua bool) error
	Flush() error
	Zero(off, length int64, unmap bool) error
	Close() error
}

type rule struct {
	op     Op
	nth    int  // fire at this count of op (1-based, counted from when the rule was added)
	from   bool // and every later one
	hang   bool
	err    error
	base   int
	fired  bool
	offLo  int64 // read-range rules: [offLo, offHi)
	offHi  int64
	ranged bool
}

// FaultLeg wraps a leg and injects errors or hangs on command (a fake: a
// real disk cannot be told to fail on its Nth I/O).
type FaultLeg struct {
	inner   Leg
	mu      sync.Mutex
	counts  [numOps]int
	rules   []*rule
	release chan struct{} // closed by Heal to free hung calls
	hung    int
}

// NewFaultLeg wraps inner; with no rules it passes every call through.
func NewFaultLeg(inner Leg) *FaultLeg {
	return &FaultLeg{inner: inner, release: make(chan struct{})}
}

// FailNth makes the nth op (counting from now, 1-based) return err.
func (f *FaultLeg) FailNth(op Op, n int, err error) {
	f.add(&rule{op: op, nth: n, err: err})
}

// FailFrom makes the nth op and every later one return err (until Heal).
func (f *FaultLeg) FailFrom(op Op, n int, err error) {
	f.add(&rule{op: op, nth: n, from: true, err: err})
}

// HangNth makes the nth op block until Heal (then it proceeds normally).
func (f *FaultLeg) HangNth(op Op, n int) {
	f.add(&rule{op: op, nth: n, hang: true})
}

// HangFrom makes the nth op and every later one block until Heal.
func (f *FaultLeg) HangFrom(op Op, n int) {
	f.add(&rule{op: op, nth: n, from: true, hang: true})
}

// BadRange makes reads overlapping [off, off+n) fail with err until a
// write covers the whole range (a bad sector the disk remaps on rewrite).
func (f *FaultLeg) BadRange(off, n int64, err error) {
	f.add(&rule{op: OpRead, ranged: true, offLo: off, offHi: off + n, err: err, from: true})
}

func (f *FaultLeg) add(r *rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.base = f.counts[r.op]
	f.rules = append(f.rules, r)
}

// Heal removes every rule and releases hung calls.
func (f *FaultLeg) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
	close(f.release)
	f.release = make(chan struct{})
}

// Count returns how many ops of a kind the leg has seen.
func (f *FaultLeg) Count(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[op]
}

// Hung returns how many calls are blocked right now.
func (f *FaultLeg) Hung() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hung
}

// Inner returns the wrapped leg.
func (f *FaultLeg) Inner() Leg { return f.inner }

// before applies the rules to one call; it returns the error to inject.
func (f *FaultLeg) before(op Op, off, n int64) error {
	f.mu.Lock()
	f.counts[op]++
	c := f.counts[op]
	var hang chan struct{}
	var err error
	for _, r := range f.rules {
		if r.op != op {
			continue
		}
		if r.ranged {
			if off < r.offHi && off+n > r.offLo {
				err = r.err
			}
			continue
		}
		k := c - r.base
		if k == r.nth || (r.from && k >= r.nth) {
			if r.hang {
				hang = f.release
			} else if err == nil {
				err = r.err
			}
		}
	}
	if op == OpWrite || op == OpZero {
		// A write covering a bad range remaps it.
		kept := f.rules[:0]
		for _, r := range f.rules {
			if r.ranged && off <= r.offLo && off+n >= r.offHi {
				continue
			}
			kept = append(kept, r)
		}
		f.rules = kept
	}
	if hang != nil {
		f.hung++
	}
	f.mu.Unlock()
	if hang != nil {
		<-hang
		f.mu.Lock()
		f.hung--
		f.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("%s %s (injected): %w", f.inner.Name(), op, err)
	}
	return nil
}

func (f *FaultLeg) Name() string { return f.inner.Name() }
func (f *FaultLeg) Size() int64  { return f.inner.Size() }

func (f *FaultLeg) ReadAt(p []byte, off int64) error {
	if err := f.before(OpRead, off, int64(len(p))); err != nil {
		return err
	}
	return f.inner.ReadAt(p, off)
}

func (f *FaultLeg) WriteAt(p []byte, off int64, fua bool) error {
	if err := f.before(OpWrite, off, int64(len(p))); err != nil {
		return err
	}
	return f.inner.WriteAt(p, off, fua)
}

func (f *FaultLeg) Flush() error {
	if err := f.before(OpFlush, 0, 0); err != nil {
		return err
	}
	return f.inner.Flush()
}

func (f *FaultLeg) Zero(off, length int64, unmap bool) error {
	if err := f.before(OpZero, off, length); err != nil {
		return err
	}
	return f.inner.Zero(off, length, unmap)
}

func (f *FaultLeg) Close() error { return f.inner.Close() }
