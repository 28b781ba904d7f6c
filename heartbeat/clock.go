package heartbeat

import "time"

// Clock is the runner's source of time (tailscale's tstime.Clock idea):
// the real clock in mirrord, a fake one where a test drives the runner.
// The state machine itself never reads a clock; it is handed `now`.
type Clock interface {
	Now() time.Time
	// NewTicker returns a channel ticking every d and a stop function.
	NewTicker(d time.Duration) (<-chan time.Time, func())
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() time.Time { return time.Now() }

// NewTicker implements Clock.
func (SystemClock) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}
