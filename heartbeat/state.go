package heartbeat

import (
	"fmt"
	"time"
)

// SerialMedium is the name of the serial line medium.
const SerialMedium = "serial"

// MediumState is the state of one medium towards one peer.
type MediumState uint8

const (
	MediumDown MediumState = iota // silent for timing.dead (or never heard)
	MediumWarn                    // silent for timing.warn
	MediumUp                      // heard within timing.warn
)

func (s MediumState) String() string {
	return [...]string{"down", "warn", "up"}[s]
}

// MarshalText renders the state in JSON.
func (s MediumState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// NodeState is the local view of a peer.
type NodeState uint8

const (
	// NodeUnknown: not heard yet and timing.initdead has not elapsed.
	NodeUnknown NodeState = iota
	// NodeAlive: heard on a network medium within timing.warn.
	NodeAlive
	// NodeSuspect: every network medium silent for timing.warn.
	NodeSuspect
	// NodePartitioned: every network medium silent for timing.dead, but a
	// disk slot still advances: the peer lives, the network is cut. No
	// takeover; loud alarm.
	NodePartitioned
	// NodeDead: every medium silent for timing.dead and no disk slot
	// advancing (or never heard within timing.initdead).
	NodeDead
)

func (s NodeState) String() string {
	return [...]string{"unknown", "alive", "suspect", "partitioned", "dead"}[s]
}

// MarshalText renders the state in JSON.
func (s NodeState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// live reports whether a node in state s may hold a role.
func (s NodeState) live() bool {
	return s == NodeAlive || s == NodeSuspect || s == NodePartitioned
}

// EventKind says what an Event reports.
type EventKind uint8

const (
	EventMedium EventKind = iota + 1 // a medium towards Node changed state
	EventNode                        // Node changed state
	EventRole                        // the local role proposal changed
	EventTable                       // the index table changed (new version)
	EventAlarm                       // something an operator must look at
	EventApp                         // Node's app state changed (Event.App), or is unknown again (it restarted)
)

// Event is one output of the state machine.
type Event struct {
	At     time.Time
	Kind   EventKind
	Node   NodeID
	Medium string
	From   string // previous state / role
	To     string // new state / role
	Msg    string // alarms; EventRole: why; EventApp: why the state is unknown
	App    []byte // EventApp: the peer's new app state
}

func (e Event) String() string {
	switch e.Kind {
	case EventMedium:
		return fmt.Sprintf("medium %s to %s: %s -> %s", e.Medium, e.Node, e.From, e.To)
	case EventNode:
		return fmt.Sprintf("node %s: %s -> %s", e.Node, e.From, e.To)
	case EventRole:
		if e.Msg != "" {
			return fmt.Sprintf("role: %s -> %s (%s)", e.From, e.To, e.Msg)
		}
		return fmt.Sprintf("role: %s -> %s", e.From, e.To)
	case EventTable:
		return "index table: " + e.To
	case EventAlarm:
		return "ALARM: " + e.Msg
	case EventApp:
		if e.Msg != "" {
			return fmt.Sprintf("app state of %s: %s", e.Node, e.Msg)
		}
		return fmt.Sprintf("app state of %s: %d bytes", e.Node, len(e.App))
	}
	return "event?"
}

// Counters count frames the node refused. None of them is acted on.
type Counters struct {
	Malformed     uint64 `json:"malformed"` // failed strict decoding
	BadAuth       uint64 `json:"bad_auth"`  // HMAC mismatch: forged or wrong key
	WrongCluster  uint64 `json:"wrong_cluster"`
	Replayed      uint64 `json:"replayed"`             // sequence not newer, or an older boot
	Unconfirmed   uint64 `json:"unconfirmed"`          // authentic, but does not echo this run's nonce: no beat
	UnknownNode   uint64 `json:"unknown_node"`         // sender not in the config
	WrongMedium   uint64 `json:"wrong_medium"`         // arrived on another medium than it was signed for
	SerialGarbage uint64 `json:"serial_garbage_bytes"` // skipped while resynchronising the serial line
	Accepted      uint64 `json:"accepted"`
}

// UnmarshalText parses a state name (mirrorctl reads mirrord's JSON).
func (s *MediumState) UnmarshalText(b []byte) error {
	for i, n := range [...]string{"down", "warn", "up"} {
		if n == string(b) {
			*s = MediumState(i)
			return nil
		}
	}
	return fmt.Errorf("unknown medium state %q", b)
}

// UnmarshalText parses a state name (mirrorctl reads mirrord's JSON).
func (s *NodeState) UnmarshalText(b []byte) error {
	for i, n := range [...]string{"unknown", "alive", "suspect", "partitioned", "dead"} {
		if n == string(b) {
			*s = NodeState(i)
			return nil
		}
	}
	return fmt.Errorf("unknown node state %q", b)
}
