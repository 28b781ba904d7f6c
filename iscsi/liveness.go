package iscsi

import (
	"fmt"
	"time"
)

// Serial number arithmetic (RFC 1982 with SERIAL_BITS = 32), used for
// CmdSN, StatSN and the command window.
func serialLT(a, b uint32) bool { return a != b && b-a < 1<<31 }
func serialLE(a, b uint32) bool { return a == b || serialLT(a, b) }

// window is the CmdSN window the target grants: commands with
// ExpCmdSN <= CmdSN <= MaxCmdSN may be sent.
type window struct {
	exp, max uint32
}

// update folds a target's ExpCmdSN/MaxCmdSN into the window. Per RFC 7143
// section 4.2.2.1, values with MaxCmdSN < ExpCmdSN-1 are ignored, and
// neither edge moves backwards.
func (w *window) update(exp, max uint32) {
	if serialLT(max, exp-1) {
		return
	}
	if serialLT(w.exp, exp) {
		w.exp = exp
	}
	if serialLT(w.max, max) {
		w.max = max
	}
}

// open reports whether a command numbered cmdSN may be sent now.
func (w window) open(cmdSN uint32) bool { return serialLE(cmdSN, w.max) }

// liveness decides when to ping and when a connection is dead. It is pure:
// the caller passes the current time and what it knows.
type liveness struct {
	Timeout      time.Duration // a command or ping unanswered this long kills the connection
	PingInterval time.Duration // ping when nothing was received for this long
}

// livenessInput is the connection's state at one tick.
type livenessInput struct {
	Now        time.Time
	LastRecv   time.Time // last PDU from the target
	PingSent   time.Time // zero when no ping is outstanding
	OldestTask time.Time // send time of the oldest outstanding command (zero: none)
	OldestOp   string
	// WindowClosedSince is when commands started waiting behind a CmdSN
	// window the target keeps closed (zero: not waiting).
	WindowClosedSince time.Time
}

// check returns whether to send a ping now, or the error that kills the
// connection.
func (l liveness) check(in livenessInput) (ping bool, dead error) {
	if !in.PingSent.IsZero() && in.Now.Sub(in.PingSent) >= l.Timeout {
		return false, fmt.Errorf("%w: no answer to a NOP-Out ping for %v", ErrTimeout, in.Now.Sub(in.PingSent).Round(time.Millisecond))
	}
	if !in.OldestTask.IsZero() && in.Now.Sub(in.OldestTask) >= l.Timeout {
		return false, fmt.Errorf("%w: %s not answered for %v", ErrTimeout, in.OldestOp, in.Now.Sub(in.OldestTask).Round(time.Millisecond))
	}
	if !in.WindowClosedSince.IsZero() && in.Now.Sub(in.WindowClosedSince) >= l.Timeout {
		return false, fmt.Errorf("%w: the target kept the command window closed (MaxCmdSN) for %v", ErrTimeout, in.Now.Sub(in.WindowClosedSince).Round(time.Millisecond))
	}
	if in.PingSent.IsZero() && in.Now.Sub(in.LastRecv) >= l.PingInterval {
		return true, nil
	}
	return false, nil
}
