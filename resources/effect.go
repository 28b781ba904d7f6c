package resources

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// EffectKind says what the node must do for an Effect.
type EffectKind uint8

const (
	// EffectFence: preempt the keys of Victims on every reachable array
	// (PREEMPT AND ABORT, which also moves the reservation here); answer
	// with Done(Op). Fails unless every reachable array was fenced and at
	// least one was reachable.
	EffectFence EffectKind = iota + 1
	// EffectStart, EffectStop, EffectMonitor: call the agent of Resource
	// with a ctx deadline of Timeout; answer with Done(Op).
	EffectStart
	EffectStop
	EffectMonitor
	// EffectStopAllNow: this node was fenced: stop every resource at once,
	// no graceful stop (kill the processes, drop the addresses, close the
	// volume without flushing); answer with Done(Op).
	EffectStopAllNow
	// EffectSetEligible: membership's SetEligible(Eligible).
	EffectSetEligible
	// EffectPersist: write the standby flag (Standby) to state_dir,
	// fsynced, so that it survives a restart (Options.Standby).
	EffectPersist
	// EffectPublish: hand Data (App encoded) to membership's SetAppState.
	EffectPublish
	// EffectReregister: register this node's key again on every array,
	// as at start: after a cleanup of the fenced state, and right before
	// an EffectFence when nothing of the group runs here (a clean standby
	// whose key a peer's takeover preempted). No answer: the node carries
	// it out synchronously (fence.Register) before it handles the next
	// effect, so the fence that follows runs with the key back; a failed
	// Register is logged and the fence then fails or reports Fenced.
	EffectReregister
	// EffectAlarm: something an operator must look at (Msg).
	EffectAlarm
	// EffectLog: a decision worth a log line (Msg).
	EffectLog
)

// Effect is one output of the Group.
type Effect struct {
	Kind EffectKind
	// Op identifies an operation the node answers with Done (Fence, Start,
	// Stop, Monitor, StopAllNow); results with another Op are ignored.
	Op       uint64
	Resource string
	Timeout  time.Duration
	Victims  []heartbeat.NodeID
	Eligible bool     // SetEligible
	Standby  bool     // Persist
	App      AppState // Publish
	Data     []byte   // Publish: App encoded
	Msg      string   // Alarm, Log
}

func (e Effect) String() string {
	switch e.Kind {
	case EffectFence:
		v := make([]string, len(e.Victims))
		for i, id := range e.Victims {
			v[i] = string(id)
		}
		return "fence " + strings.Join(v, " ")
	case EffectStart:
		return "start " + e.Resource
	case EffectStop:
		return "stop " + e.Resource
	case EffectMonitor:
		return "monitor " + e.Resource
	case EffectStopAllNow:
		return "stop-all-now"
	case EffectSetEligible:
		return fmt.Sprintf("eligible %v", e.Eligible)
	case EffectPersist:
		return fmt.Sprintf("persist standby %v", e.Standby)
	case EffectPublish:
		s := "publish " + e.App.State.String()
		if e.App.Current != "" {
			s += " " + e.App.Current
		}
		return s
	case EffectReregister:
		return "reregister"
	case EffectAlarm:
		return "ALARM: " + e.Msg
	case EffectLog:
		return "log: " + e.Msg
	}
	return "effect?"
}

// Outcome classifies an agent's answer.
type Outcome uint8

const (
	OK Outcome = iota
	// Failed: the operation failed.
	Failed
	// TimedOut: the agent's ctx deadline passed (or the watchdog fired).
	TimedOut
	// NotRunning: Monitor found the resource cleanly stopped. For a Stop
	// it means success.
	NotRunning
	// Fenced: the arrays refused this node (RESERVATION CONFLICT, our key
	// preempted): same as Group.Fenced.
	Fenced
)

func outcomeNames() []string { return []string{"ok", "failed", "timed out", "not running", "fenced"} }

func (o Outcome) String() string {
	if int(o) >= len(outcomeNames()) {
		return fmt.Sprintf("outcome(%d)", uint8(o))
	}
	return outcomeNames()[o]
}

// Result is an agent's answer to one operation.
type Result struct {
	Op      uint64
	Outcome Outcome
	Err     string // what went wrong, for status and alarms
}

// ErrFenced marks an error caused by this node being fenced: an agent
// wraps RESERVATION CONFLICT (mirror.ErrFenced, a preempted key) in it.
var ErrFenced = errors.New("fenced: the arrays refuse this node (RESERVATION CONFLICT)")

// ResultOf classifies an agent's error for operation op: nil is OK;
// ErrFenced, ErrNotRunning and context.DeadlineExceeded (wrapped) are
// Fenced, NotRunning and TimedOut; anything else is Failed.
func ResultOf(op uint64, err error) Result {
	r := Result{Op: op}
	if err == nil {
		return r
	}
	r.Err = err.Error()
	switch {
	case errors.Is(err, ErrFenced):
		r.Outcome = Fenced
	case errors.Is(err, ErrNotRunning):
		r.Outcome = NotRunning
	case errors.Is(err, context.DeadlineExceeded):
		r.Outcome = TimedOut
	default:
		r.Outcome = Failed
	}
	return r
}
