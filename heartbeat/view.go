package heartbeat

import (
	"bytes"
	"time"
)

// View is one consistent snapshot of membership for the resources layer:
// Member.View takes it under the member's lock, so the role proposal and
// every peer's state and app state belong to the same moment. The group
// machine is fed Views (and Events), never pieces read one by one.
type View struct {
	At   time.Time
	Self NodeID
	Role Role // this node's role proposal
	// Term is this node's takeover term: while it proposes active, the
	// term of that claim; otherwise the highest term it knows (roles.go).
	Term     uint64
	Eligible bool   // this node's own eligibility (SetEligible)
	App      []byte // this node's own app state (SetAppState)
	Peers    []PeerView
}

// PeerView is this node's view of one peer.
type PeerView struct {
	ID    NodeID
	State NodeState
	// Role and Eligible are what the peer advertised in its latest beat;
	// RoleNone and false unless the peer is live (alive, suspect or
	// partitioned): a dead peer's last word proposes nothing.
	Role     Role
	Eligible bool
	// Term is the takeover term from the peer's latest beat (its claim's
	// while it proposes active, else the highest it knows); 0 unless the
	// peer is live. A live peer that proposes standby has heard this
	// node's claim only if Term >= View.Term (roles.go: what the resources
	// layer must assume).
	Term uint64
	// App is the peer's app state from its latest beat in its current run;
	// HasApp is false until one came (and again after it restarts). A dead
	// peer's last app state is kept: it says what may still run there.
	App    []byte
	HasApp bool
	// Age is the time since the peer's latest heartbeat beat, on any
	// medium; -1 when none came in its current run.
	Age time.Duration
}

// Peer returns the view of peer id.
func (v View) Peer(id NodeID) (PeerView, bool) {
	for _, p := range v.Peers {
		if p.ID == id {
			return p, true
		}
	}
	return PeerView{}, false
}

// View returns the machine's view at now (slices are copies).
func (m *Machine) View(now time.Time) View {
	v := View{At: now, Self: m.cfg.Self, Role: m.role, Term: m.Term(), Eligible: m.eligible, App: bytes.Clone(m.app)}
	for _, id := range m.cfg.Nodes {
		if p := m.peers[id]; p != nil {
			v.Peers = append(v.Peers, m.peerView(now, p))
		}
	}
	return v
}

func (m *Machine) peerView(now time.Time, p *peer) PeerView {
	v := PeerView{ID: p.id, State: p.state, Age: -1}
	if p.state.live() {
		v.Role, v.Eligible, v.Term = p.hb.Role, p.hb.Eligible, p.hb.Term
	}
	if !p.beat.IsZero() {
		v.App, v.HasApp, v.Age = bytes.Clone(p.hb.App), true, now.Sub(p.beat)
	}
	return v
}
