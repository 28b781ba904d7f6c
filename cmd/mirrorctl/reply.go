package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/resources/node"
	"github.com/hamirror/hamirror/resources/volume"
)

// reply is mirrord's answer to "status" and to the commands that answer
// with the status. Two daemons answer them: the cluster node
// (`mirrord --config`, resources/node.Status: node, cluster, group,
// volume, peer_volume) and the single-node volume (`mirrord volume`:
// mirror.Status at the top level plus nbd). A membership-only daemon
// answers {"cluster": ...}.
type reply struct {
	// Raw is the answer as mirrord sent it (status --json prints it).
	Raw json.RawMessage
	// Node is set when a cluster node answered.
	Node *node.Status
	// Volume is the volume this daemon serves, in the volume daemon's
	// shape; its State is "" when no volume runs here.
	Volume volumeStatus
}

// decodeReply tells the two daemons apart by the "group" key only the
// node sends, and decodes either.
func decodeReply(raw json.RawMessage) (reply, error) {
	r := reply{Raw: raw}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return r, fmt.Errorf("decoding mirrord's answer: %w", err)
	}
	if _, ok := keys["group"]; !ok {
		if err := json.Unmarshal(raw, &r.Volume); err != nil {
			return r, fmt.Errorf("decoding mirrord's volume status: %w", err)
		}
		return r, nil
	}
	var st node.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return r, fmt.Errorf("decoding mirrord's node status: %w", err)
	}
	r.Node = &st
	if st.Volume != nil {
		r.Volume = fromNodeVolume(st.Volume)
	}
	return r, nil
}

// fromNodeVolume is the node's volume status in the volume daemon's shape.
func fromNodeVolume(v *volume.Status) volumeStatus {
	var st volumeStatus
	st.Status = v.Status
	st.NBD.Listen, st.NBD.Device, st.NBD.Connections = v.Listen, v.Device, v.NBD
	return st
}

// call sends op to mirrord and decodes the status it answers with.
func call(g *globals, op string, args any) (reply, error) {
	var raw json.RawMessage
	if err := control.Call(g.control, op, args, &raw); err != nil {
		return reply{}, explainOp(op, err)
	}
	return decodeReply(raw)
}

// getStatus asks mirrord for its status.
func getStatus(g *globals) (reply, error) { return call(g, "status", nil) }

// explainOp turns "unknown operation" from a daemon that lacks op into
// what the operator should do.
func explainOp(op string, err error) error {
	var re *control.RemoteError
	if !errors.As(err, &re) || !strings.HasPrefix(re.Msg, "unknown operation") {
		return err
	}
	switch op {
	case "move", "standby", "maintenance", "resource-restart", "cleanup":
		return notANode(op)
	}
	return err
}

// notANode says that op needs the cluster node, not `mirrord volume`.
func notANode(op string) error {
	return fmt.Errorf("%s: this mirrord serves a volume only (mirrord volume); the resource group runs in the cluster node (mirrord --config FILE)", op)
}

// volumeHere is the volume of r, or an error saying where to look when no
// volume runs on this node (a standby node of the cluster).
func (r reply) volumeHere() (volumeStatus, error) {
	if r.Volume.hasVolume() {
		return r.Volume, nil
	}
	if r.Node != nil {
		return r.Volume, fmt.Errorf("the volume does not run on %s (the group's state here: %s); run this on the node that runs the group (mirrorctl status shows it)", r.Node.Node, r.Node.Group.State)
	}
	return r.Volume, errors.New("mirrord serves no volume (membership only)")
}
