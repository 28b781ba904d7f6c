package legtest

// Async gives a leg a completion API like the iSCSI initiator's
// (StartReadAt/StartWriteAt with a callback), a fake for testing the
// engine's AsyncLeg path without a network: each call runs the wrapped
// leg's synchronous method in a goroutine and reports its result from
// there. A hang of the wrapped leg (FaultLeg) is a completion that does
// not come.
type Async struct {
	Leg
}

// StartReadAt reads p at off and calls done from another goroutine.
func (a *Async) StartReadAt(p []byte, off int64, done func(error)) {
	go func() { done(a.Leg.ReadAt(p, off)) }()
}

// StartWriteAt writes p at off and calls done from another goroutine.
func (a *Async) StartWriteAt(p []byte, off int64, fua bool, done func(error)) {
	go func() { done(a.Leg.WriteAt(p, off, fua)) }()
}
