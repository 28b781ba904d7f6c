package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources"
)

// ForceCommand is the cluster's forcing command that the refusals of an
// assembly the legs cannot settle name (volume.Options.ForceHint).
const ForceCommand = "mirrorctl volume keep-leg N"

const forceHint = "in the cluster, force it with `" + ForceCommand + "` on the node that should run the group, once the group runs nowhere (not --keep-leg)"

// keepLegHandler is the "keep-leg" control operation (`mirrorctl volume
// keep-leg N`): the cluster's way to force a start the legs cannot settle
// (a split brain, a lone leg not provably the newest, an unreadable or
// blank other leg). The next start of the volume on this node keeps leg
// N's data, that one start only; the command is written to the
// management log and clears the group's failures here (cleanup), so that
// this node starts the group. It is refused while the group runs, starts
// or stops on any node, while this node is fenced, blocked or in
// standby, and while a live peer may start the group first (without it).
func (n *Node) keepLegHandler(raw json.RawMessage) (any, error) {
	var a struct {
		Slot *int `json:"slot"`
	}
	if err := decodeArgs(raw, &a); err != nil {
		return nil, err
	}
	if a.Slot == nil || *a.Slot < 0 || *a.Slot > 1 {
		return nil, errors.New("keep-leg: the leg is 0 or 1 (see mirrorctl status, or mirrorctl examine on each leg)")
	}
	if n.vol == nil {
		return nil, errors.New("keep-leg: the cluster file has no volume section")
	}
	slot := *a.Slot
	return n.loopCommand(func(now time.Time) error {
		if err := n.mayForce(); err != nil {
			return fmt.Errorf("keep-leg %d refused: %w", slot, err)
		}
		n.vol.agent.KeepLeg(slot)
		if n.svc != nil && n.svc.Log() != nil {
			n.svc.Log().Warn("volume", "operator forced the next start of the volume: it keeps this leg's data where the legs do not prove which copy is newest (the other leg is overwritten by a resync)",
				"node", string(n.self), "keep_leg", slot, "leg", n.cfg.Volume.Legs[slot])
		}
		n.log.Warn("keep-leg: the next start of the volume here keeps this leg's data", "leg", slot)
		return n.group.Cleanup(now, "")
	})
}

// mayForce says why a forced start must not be ordered now (on the loop).
func (n *Node) mayForce() error {
	st := n.group.Status()
	switch {
	case st.State == resources.GroupFenced:
		return fmt.Errorf("%s is fenced: find out why (mirrorctl status on the peer), then mirrorctl cleanup", n.self)
	case st.State == resources.GroupBlocked:
		return fmt.Errorf("the group is blocked on %s: resolve the failed stop and run mirrorctl cleanup first", n.self)
	case !st.State.Clean():
		return fmt.Errorf("the group is %s on %s: it must run nowhere (stop it with mirrorctl standby)", st.State, n.self)
	case st.Standby:
		return fmt.Errorf("%s is in standby: mirrorctl unstandby first", n.self)
	}
	for _, p := range n.member.View().Peers {
		if p.State != heartbeat.NodeAlive && p.State != heartbeat.NodeSuspect && p.State != heartbeat.NodePartitioned {
			continue // dead or unknown: a start fences it first
		}
		if !p.HasApp {
			return fmt.Errorf("%s is %s and has not told its group state yet: try again in a moment", p.ID, p.State)
		}
		app, err := resources.UnmarshalAppState(p.App)
		if err != nil {
			return fmt.Errorf("%s's group state cannot be read (%v)", p.ID, err)
		}
		if !app.State.Clean() {
			return fmt.Errorf("the group is %s on %s: it must run nowhere (stop it there with mirrorctl standby)", app.State, p.ID)
		}
		if app.Eligible {
			return fmt.Errorf("%s may start the group first, without the forced leg: run mirrorctl standby on %s (or the keep-leg there)", p.ID, p.ID)
		}
	}
	return nil
}
