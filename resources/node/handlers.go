package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/volume"
)

// HandlerFunc answers one control operation (cmd/internal/control serves
// them on the unix socket).
type HandlerFunc func(args json.RawMessage) (any, error)

// Status is the "status" answer: `mirrorctl status --json`.
type Status struct {
	Node    heartbeat.NodeID  `json:"node"`
	Cluster heartbeat.Status  `json:"cluster"`
	Group   resources.Status  `json:"group"`
	Volume  *volume.Status    `json:"volume,omitempty"`
	Peer    *PeerVolumeStatus `json:"peer_volume,omitempty"`
}

// PeerVolumeStatus is what this node holds of the peer's volume
// knowledge, and whether a takeover could use it.
type PeerVolumeStatus struct {
	From      heartbeat.NodeID  `json:"from"`
	Knowledge mirror.KnownState `json:"knowledge"`
	Seq       uint64            `json:"seq"`
	Confirmed bool              `json:"confirmed"` // received in this run
	Trusted   bool              `json:"trusted"`   // a takeover would use it
	Note      string            `json:"note,omitempty"`
	_         struct{}          `json:"-"`
}

type nodeArg struct {
	Node heartbeat.NodeID `json:"node,omitempty"`
}

type onArg struct {
	On bool `json:"on"`
}

type nameArg struct {
	Name string `json:"name,omitempty"`
}

type slotArgs struct {
	Slot  int    `json:"slot"`
	Path  string `json:"path,omitempty"`
	Force bool   `json:"force,omitempty"`
}

type verifyArgs struct {
	Repair bool `json:"repair"`
}

// Handlers are the control operations of a node.
func (n *Node) Handlers() map[string]HandlerFunc {
	h := map[string]HandlerFunc{
		"status": func(json.RawMessage) (any, error) { return n.Status(), nil },
		"nodes":  func(json.RawMessage) (any, error) { return n.member.Status(), nil },
		"move": func(raw json.RawMessage) (any, error) {
			var a nodeArg
			if err := decodeOptional(raw, &a); err != nil {
				return nil, err
			}
			return n.loopCommand(func(now time.Time) error {
				if a.Node != "" && a.Node != n.self {
					if !n.isPeer(a.Node) {
						return fmt.Errorf("move: %q is not a node of this cluster", a.Node)
					}
				}
				if a.Node == n.self {
					if n.group.Status().State == resources.GroupRunning {
						return errors.New("move: the group already runs on this node")
					}
					return fmt.Errorf("move: to bring the group here, run `mirrorctl move` on the node that runs it (or `mirrorctl standby` there)")
				}
				return n.group.Move(now)
			})
		},
		"standby": func(raw json.RawMessage) (any, error) {
			var a onArg
			if err := decodeArgs(raw, &a); err != nil {
				return nil, err
			}
			return n.loopCommand(func(now time.Time) error { return n.group.Standby(now, a.On) })
		},
		"maintenance": func(raw json.RawMessage) (any, error) {
			var a onArg
			if err := decodeArgs(raw, &a); err != nil {
				return nil, err
			}
			return n.loopCommand(func(now time.Time) error { return n.group.Maintenance(now, a.On) })
		},
		"resource-restart": func(raw json.RawMessage) (any, error) {
			var a nameArg
			if err := decodeArgs(raw, &a); err != nil {
				return nil, err
			}
			return n.loopCommand(func(now time.Time) error { return n.group.Restart(now, a.Name) })
		},
		"cleanup": func(raw json.RawMessage) (any, error) {
			var a nameArg
			if err := decodeOptional(raw, &a); err != nil {
				return nil, err
			}
			return n.loopCommand(func(now time.Time) error { return n.group.Cleanup(now, a.Name) })
		},
		"leg-fail": func(raw json.RawMessage) (any, error) {
			var a slotArgs
			if err := decodeArgs(raw, &a); err != nil {
				return nil, err
			}
			return n.volumeOp(func(v *mirror.Volume) error { return v.FailLeg(a.Slot) })
		},
		"leg-add": func(raw json.RawMessage) (any, error) {
			var a slotArgs
			if err := decodeArgs(raw, &a); err != nil {
				return nil, err
			}
			if a.Path != "" {
				return nil, fmt.Errorf("leg add %d %s: in a cluster the legs are the cluster file's volume.legs (both nodes fence and log in to them): put the new array there on both nodes, restart mirrord on the standby, move the group to it, then on the other", a.Slot, a.Path)
			}
			return n.volumeOp(func(v *mirror.Volume) error { return v.AddLegWith(a.Slot, nil, mirror.AddOptions{Force: a.Force}) })
		},
		"resync": func(json.RawMessage) (any, error) {
			return n.volumeOp(func(v *mirror.Volume) error { return v.Resync() })
		},
		"verify": func(raw json.RawMessage) (any, error) {
			var a verifyArgs
			if err := decodeArgs(raw, &a); err != nil {
				return nil, err
			}
			return n.volumeOp(func(v *mirror.Volume) error { return v.StartVerify(a.Repair) })
		},
	}
	for op, f := range n.svc.Handlers() {
		h[op] = HandlerFunc(f)
	}
	h["reload"] = n.reloadHandler    // reload.go
	h["keep-leg"] = n.keepLegHandler // keepleg.go
	return h
}

// loopCommand runs an operator command on the loop and answers the status,
// with the group as the command left it (the loop publishes its status
// only after it has carried out the command's effects).
func (n *Node) loopCommand(f func(now time.Time) error) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := n.call(ctx, func(now time.Time) (any, error) {
		if err := f(now); err != nil {
			return nil, err
		}
		return n.group.Status(), nil
	})
	if err != nil {
		return nil, err
	}
	st := n.Status()
	st.Group = g.(resources.Status)
	return st, nil
}

// volumeOp runs f on the running volume.
func (n *Node) volumeOp(f func(*mirror.Volume) error) (any, error) {
	if n.vol == nil {
		return nil, errors.New("the cluster file has no volume section")
	}
	v := n.vol.agent.Mirror()
	if v == nil {
		return nil, fmt.Errorf("the volume does not run on %s (mirrorctl status shows where it runs)", n.self)
	}
	if err := f(v); err != nil {
		return nil, err
	}
	return n.Status(), nil
}

func (n *Node) isPeer(id heartbeat.NodeID) bool {
	for _, p := range n.peers {
		if p == id {
			return true
		}
	}
	return false
}

// Status is the node's whole status.
func (n *Node) Status() Status {
	n.mu.Lock()
	g := n.status
	n.mu.Unlock()
	st := Status{Node: n.self, Cluster: n.member.Status(), Group: g}
	if n.vol != nil {
		if vs, ok := n.vol.agent.Status(); ok {
			st.Volume = &vs
		}
		st.Peer = n.vol.peerStatus()
	}
	return st
}

func decodeArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return errors.New("missing arguments")
	}
	return decodeOptional(raw, v)
}

func decodeOptional(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("malformed arguments: %w", err)
	}
	return nil
}
