package legtest

import (
	"sync"
	"time"
)

// SlowLeg wraps a leg whose Zero runs at a fixed speed (it sleeps
// length/rate before zeroing), as an array that zeroes by writing does,
// and records every Zero call. A FAKE: a real array's speed cannot be
// set; tests run it under testing/synctest, where the sleeps take no
// real time.
type SlowLeg struct {
	Leg
	rate int64 // bytes per second

	mu    sync.Mutex
	calls []ZeroCall
}

// ZeroCall is one Zero a SlowLeg served.
type ZeroCall struct {
	Off, Length int64
	Took        time.Duration
}

// NewSlowLeg zeroes inner at rate bytes per second.
func NewSlowLeg(inner Leg, rate int64) *SlowLeg {
	return &SlowLeg{Leg: inner, rate: rate}
}

func (s *SlowLeg) Zero(off, length int64, unmap bool) error {
	t0 := time.Now()
	time.Sleep(time.Duration(float64(length) / float64(s.rate) * float64(time.Second)))
	err := s.Leg.Zero(off, length, unmap)
	s.mu.Lock()
	s.calls = append(s.calls, ZeroCall{Off: off, Length: length, Took: time.Since(t0)})
	s.mu.Unlock()
	return err
}

// ZeroCalls returns the Zero calls served so far.
func (s *SlowLeg) ZeroCalls() []ZeroCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ZeroCall(nil), s.calls...)
}
