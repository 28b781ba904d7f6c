package resources

import "fmt"

// GroupState is what the group does on one node, as published in the app
// state and shown by mirrorctl status.
type GroupState uint8

const (
	// GroupStopped: nothing of the group runs here.
	GroupStopped GroupState = iota
	// GroupStarting: fencing a peer or starting resources in order.
	GroupStarting
	// GroupRunning: every resource runs; monitors are active.
	GroupRunning
	// GroupStopping: stopping resources in reverse order (a move, a
	// restart, the start-up cleanup of whatever a crashed run left).
	GroupStopping
	// GroupBlocked: a stop failed or timed out; the resources are left as
	// they are and no peer starts the group until `mirrorctl cleanup`.
	GroupBlocked
	// GroupFenced: a peer fenced this node; everything was stopped at once
	// and the node stays out until `mirrorctl cleanup` or a restart.
	GroupFenced
	// GroupFailed: stopped after a resource reached migration_threshold
	// failures; the node is ineligible until cleanup or failure_timeout.
	GroupFailed
	groupStateMax = GroupFailed
)

func groupStateNames() []string {
	return []string{"stopped", "starting", "running", "stopping", "blocked", "fenced", "failed"}
}

func (s GroupState) String() string {
	if s > groupStateMax {
		return fmt.Sprintf("state(%d)", uint8(s))
	}
	return groupStateNames()[s]
}

// Clean reports whether nothing of the group runs on a node in state s,
// so that a peer may start the group without fencing that node: stopped,
// failed (stopped after a failure) and fenced (stopped at once after its
// keys were preempted) are clean; every other state is not.
func (s GroupState) Clean() bool {
	return s == GroupStopped || s == GroupFailed || s == GroupFenced
}

// MarshalText renders the state in JSON.
func (s GroupState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a state name (mirrorctl reads mirrord's JSON).
func (s *GroupState) UnmarshalText(b []byte) error {
	return parseName(groupStateNames(), b, "group state", (*uint8)(s))
}

// ResourceState is what one resource does on this node.
type ResourceState uint8

const (
	// ResUnknown: not known yet (start-up, or after a cleanup of a blocked
	// group); the machine stops it (idempotent) before anything else,
	// or starts it (idempotent) when the group should run.
	ResUnknown ResourceState = iota
	ResStopped
	ResStarting
	ResRunning
	ResStopping
	// ResFailed: a start or a monitor failed; it is stopped before it is
	// started again.
	ResFailed
	// ResBlocked: its stop failed or timed out; left as it is.
	ResBlocked
	resStateMax = ResBlocked
)

func resStateNames() []string {
	return []string{"unknown", "stopped", "starting", "running", "stopping", "failed", "blocked"}
}

func (s ResourceState) String() string {
	if s > resStateMax {
		return fmt.Sprintf("state(%d)", uint8(s))
	}
	return resStateNames()[s]
}

// MarshalText renders the state in JSON.
func (s ResourceState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a state name.
func (s *ResourceState) UnmarshalText(b []byte) error {
	return parseName(resStateNames(), b, "resource state", (*uint8)(s))
}

// LegState is a mirror leg's state as the volume knowledge carries it
// (the engine's superblock states; the node translates).
type LegState uint8

const (
	LegInSync     LegState = iota // holds every chunk
	LegFailed                     // failed or missing; gets no writes
	LegOutOfSync                  // present, needs a resync that has not started
	LegRebuilding                 // resync in progress toward this leg
	legStateMax   = LegRebuilding
)

func legStateNames() []string { return []string{"in_sync", "failed", "out_of_sync", "rebuilding"} }

func (s LegState) String() string {
	if s > legStateMax {
		return fmt.Sprintf("leg(%d)", uint8(s))
	}
	return legStateNames()[s]
}

// MarshalText renders the state in JSON.
func (s LegState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a state name.
func (s *LegState) UnmarshalText(b []byte) error {
	return parseName(legStateNames(), b, "leg state", (*uint8)(s))
}

func parseName(names []string, b []byte, what string, out *uint8) error {
	for i, n := range names {
		if n == string(b) {
			*out = uint8(i)
			return nil
		}
	}
	return fmt.Errorf("unknown %s %q", what, b)
}
