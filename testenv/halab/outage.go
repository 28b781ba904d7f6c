package halab

import (
	"time"
)

// Attempt is one try of the client loop: connect, start a session, commit
// one row. ID is the row's key, committed when Err is nil.
type Attempt struct {
	Start, End time.Time
	ID         int64
	Err        error
}

// Outage is the client-visible gap around a fault.
type Outage struct {
	// From is when the last success before the first failure ended (the
	// first failed attempt started right after it); To is when the first
	// success after the failures ended. Duration = To - From: the time
	// during which no transaction could commit.
	From, To time.Time
	Duration time.Duration
	// FaultToService is To minus the fault's time.
	FaultToService time.Duration
	Failures       int // failed attempts in between
}

// ComputeOutage finds the outage a fault caused in a client's attempts (in
// order): fault is when its injection began, applied when it was complete.
// The outage ends with the first success that started after applied (a
// request the fault could not have missed) and begins where the last
// success before it ended; if attempts failed in between, the gap begins
// at the last success before the first failure that ended after fault. ok
// is false while no such success exists yet.
func ComputeOutage(attempts []Attempt, fault, applied time.Time) (o Outage, ok bool) {
	s := -1
	for i, a := range attempts {
		if a.Err == nil && !a.Start.Before(applied) {
			s = i
			break
		}
	}
	if s < 0 {
		return Outage{}, false
	}
	from := s
	for i := 0; i < s; i++ {
		if attempts[i].Err != nil && attempts[i].End.After(fault) {
			from = i
			break
		}
	}
	o.From = attempts[from].Start
	for i := from - 1; i >= 0; i-- {
		if attempts[i].Err == nil {
			o.From = attempts[i].End
			break
		}
	}
	for _, a := range attempts[from:s] {
		if a.Err != nil {
			o.Failures++
		}
	}
	o.To = attempts[s].End
	o.Duration = o.To.Sub(o.From)
	o.FaultToService = o.To.Sub(fault)
	return o, true
}
