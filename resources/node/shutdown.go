package node

import "time"

// ShutdownTimeout bounds the hand-over at SIGTERM: every resource's stop
// timeout, plus time for the peer to take over. mirrord gives up waiting
// for the group to stop after it; systemd's TimeoutStopSec
// (systemd/mirrord.service) must be longer, and `mirrorctl config check`
// prints it.
func (c *Config) ShutdownTimeout() time.Duration {
	var d time.Duration
	for _, r := range c.Group.Resources {
		d += r.StopTimeout
	}
	return d + c.Heartbeat.Timing.Dead + 5*time.Second
}
