package heartbeat

import (
	"bytes"
	"time"
)

// MediumStatus is one medium towards one peer.
type MediumStatus struct {
	Name      string        `json:"name"`
	Disk      bool          `json:"disk,omitempty"`
	State     MediumState   `json:"state"`
	LastHeard time.Duration `json:"last_heard_ns"` // age of the last accepted frame; -1: never
}

// NodeStatus is the local view of one peer (or of this node, Self=true).
type NodeStatus struct {
	ID    NodeID    `json:"id"`
	Self  bool      `json:"self,omitempty"`
	State NodeState `json:"state"`
	Role  string    `json:"role"`
	// Term is the node's takeover term (View.Term, PeerView.Term).
	Term uint64 `json:"term"`
	Ping *int   `json:"ping,omitempty"` // public ping targets reached
	// PingNote says why this node's last ping round scored what it did,
	// when a round failed or a VIP's link has no carrier (Self only).
	PingNote string `json:"ping_note,omitempty"`
	// Eligible: the node may hold the active role (a peer: as it
	// advertised in its latest beat; false unless it is live).
	Eligible bool `json:"eligible"`
	// App is the node's app state (a peer: from its latest beat in its
	// current run); base64 in JSON.
	App   []byte         `json:"app,omitempty"`
	Media []MediumStatus `json:"media,omitempty"`
}

// Status is the cluster view that mirrord serves under the "cluster" key
// of the control socket's status reply.
type Status struct {
	Cluster     string        `json:"cluster"`
	Self        NodeID        `json:"self"`
	Role        string        `json:"role"`
	Term        uint64        `json:"term"` // this node's takeover term (View.Term)
	Coordinator NodeID        `json:"coordinator"`
	Uptime      time.Duration `json:"uptime_ns"`
	Timing      struct {
		Keepalive, Warn, Dead, InitDead time.Duration
	} `json:"timing"`
	Nodes    []NodeStatus `json:"nodes"`
	Table    Table        `json:"table"`
	Rejected Counters     `json:"frames"`
	// Stalls counts the times this node's loop did not run for more than
	// timing.keepalive (stall.go); LongestStall is the longest such gap.
	Stalls       uint64        `json:"stalls"`
	LongestStall time.Duration `json:"longest_stall_ns"`
}

// Status reports the machine's view at now.
func (m *Machine) Status(now time.Time) Status {
	s := Status{Self: m.cfg.Self, Role: m.role.String(), Term: m.Term(), Coordinator: m.coordinator(),
		Uptime: now.Sub(m.start), Table: m.table.Clone(), Rejected: m.counters,
		Stalls: m.stall.count, LongestStall: m.stall.longest}
	t := m.cfg.Timing
	s.Timing.Keepalive, s.Timing.Warn, s.Timing.Dead, s.Timing.InitDead = t.Keepalive, t.Warn, t.Dead, t.InitDead
	for _, id := range m.cfg.Nodes {
		p := m.peers[id]
		if p == nil {
			ns := NodeStatus{ID: id, Self: true, State: NodeAlive, Role: m.role.String(), Term: m.Term(), Eligible: m.eligible, App: bytes.Clone(m.app)}
			if m.cfg.HasPing {
				n := int(m.ping)
				ns.Ping, ns.PingNote = &n, m.pingNote
			}
			s.Nodes = append(s.Nodes, ns)
			continue
		}
		v := m.peerView(now, p)
		ns := NodeStatus{ID: id, State: p.state, Role: v.Role.String(), Term: v.Term, Eligible: v.Eligible, App: v.App}
		if p.hb.HasPing {
			n := int(p.hb.PingScore)
			ns.Ping = &n
		}
		for _, md := range m.cfg.Media {
			ms := MediumStatus{Name: md.Name, Disk: md.Disk, State: p.media[md.Name], LastHeard: -1}
			if h := p.heard[md.Name]; !h.IsZero() {
				ms.LastHeard = now.Sub(h)
			}
			ns.Media = append(ns.Media, ms)
		}
		s.Nodes = append(s.Nodes, ns)
	}
	return s
}

// Role returns the current role proposal.
func (m *Machine) Role() Role { return m.role }

// Table returns a copy of the current index table.
func (m *Machine) Table() Table { return m.table.Clone() }

// NodeState returns the state of peer id.
func (m *Machine) NodeState(id NodeID) NodeState {
	if p := m.peers[id]; p != nil {
		return p.state
	}
	return NodeAlive
}

// MediumState returns the state of medium towards peer id.
func (m *Machine) MediumState(id NodeID, medium string) MediumState {
	if p := m.peers[id]; p != nil {
		return p.media[medium]
	}
	return MediumDown
}

// Counters returns the refused-frame counters.
func (m *Machine) Counters() Counters { return m.counters }
