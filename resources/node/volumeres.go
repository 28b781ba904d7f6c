package node

import (
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/volume"
)

// volumeRes is the volume resource as the node drives it.
type volumeRes struct {
	name  string
	agent *volume.Volume
	// fenced: every other writer was fenced for the takeover under way,
	// so the next start need not wait out the multi-mount protection.
	fenced bool
	// peer is what Status shows of the peer's knowledge (loop-owned,
	// copied under Node.mu).
	peer *PeerVolumeStatus
}

// peerStatus is the snapshot Status shows.
func (v *volumeRes) peerStatus() *PeerVolumeStatus { return v.peer }

// prepare (on the loop, just before the volume starts) hands the volume
// the peer's knowledge when a takeover may use it, and whether every
// other writer was fenced.
func (n *Node) prepareVolume(view heartbeat.View) {
	v := n.vol
	var known *mirror.KnownState
	for _, p := range view.Peers {
		if !p.HasApp {
			continue
		}
		last, err := resources.UnmarshalAppState(p.App)
		if err != nil || last.Volume.Seq == 0 {
			continue
		}
		if k, ok := n.know.trusted(p.ID, last); ok {
			known = k
		}
	}
	if known != nil {
		n.log.Info("assembling with the peer's knowledge of the volume", "known", known.String())
	}
	v.agent.Prepare(known, v.fenced)
	v.fenced = false
}

// takeKnowledge (on the loop) persists what the peers published of the
// volume and acknowledges it; it also refreshes what Status shows.
func (n *Node) takeKnowledge(now time.Time, view heartbeat.View) {
	if n.vol == nil {
		return
	}
	for _, p := range view.Peers {
		if !p.HasApp {
			continue
		}
		a, err := resources.UnmarshalAppState(p.App)
		if err != nil || a.Volume.Seq == 0 {
			continue
		}
		seq, err := n.know.receive(p.ID, a.Volume)
		if err != nil {
			n.log.Error("cannot persist the peer's volume knowledge: holding it in memory (it is used in this run only anyway); check state_dir", "err", err)
		}
		if seq != 0 {
			n.group.SetAck(now, seq)
		}
		ps := &PeerVolumeStatus{From: p.ID, Knowledge: fromKnowledge(a.Volume), Seq: a.Volume.Seq, Confirmed: n.know.confirmed}
		_, ps.Trusted = n.know.trusted(p.ID, a)
		switch {
		case ps.Trusted:
		case n.know.superseded(a.Volume.Seq):
			ps.Note = "not usable for a lone-leg takeover: this node has run the volume since the peer published it"
		default:
			ps.Note = "not usable for a lone-leg takeover: the peer is not waiting for this node's acknowledgements (it does not see it live)"
		}
		n.mu.Lock()
		n.vol.peer = ps
		n.mu.Unlock()
	}
}
