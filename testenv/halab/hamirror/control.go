package hamirror

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Status is the part of a node's "status" answer (resources/node.Status,
// `mirrorctl status --json`) the lab looks at.
type Status struct {
	Node    string `json:"node"`
	Cluster struct {
		Role   string `json:"role"`
		Term   uint64 `json:"term"`
		Timing struct {
			Keepalive, Warn, Dead, InitDead time.Duration
		} `json:"timing"`
		Nodes []struct {
			ID       string `json:"id"`
			Self     bool   `json:"self"`
			State    string `json:"state"`
			Role     string `json:"role"`
			Eligible bool   `json:"eligible"`
			Ping     *int   `json:"ping"`
			PingNote string `json:"ping_note"`
			Media    []struct {
				Name  string `json:"name"`
				State string `json:"state"`
			} `json:"media"`
		} `json:"nodes"`
	} `json:"cluster"`
	Group struct {
		State     string `json:"state"`
		Current   string `json:"current"`
		Role      string `json:"role"`
		Eligible  bool   `json:"eligible"`
		Standby   bool   `json:"standby"`
		Reason    string `json:"reason"`
		Waiting   string `json:"waiting"`
		Resources []struct {
			Name      string `json:"name"`
			State     string `json:"state"`
			Failures  int    `json:"failures"`
			LastError string `json:"last_error"`
		} `json:"resources"`
	} `json:"group"`
	Volume *VolumeStatus `json:"volume"`
	// PeerVolume is what this node holds of the peer's volume knowledge.
	PeerVolume *struct {
		From      string `json:"from"`
		Seq       uint64 `json:"seq"`
		Trusted   bool   `json:"trusted"`
		Knowledge struct {
			LegStates [2]string `json:"leg_states"`
		} `json:"knowledge"`
	} `json:"peer_volume"`
}

// VolumeStatus is the running volume's part of Status.
type VolumeStatus struct {
	State string `json:"state"`
	Legs  [2]struct {
		State          string `json:"state"`
		OutOfSyncBytes int64  `json:"out_of_sync_bytes"`
		Error          string `json:"error"`
	} `json:"legs"`
	Resync struct {
		Running bool `json:"running"`
	} `json:"resync"`
	Verify struct {
		Running    bool  `json:"running"`
		DoneBytes  int64 `json:"done_bytes"`
		TotalBytes int64 `json:"total_bytes"`
		Mismatches int64 `json:"mismatches"`
	} `json:"verify"`
	Device string `json:"device"`
}

// Peer returns what the node knows of peer id ("" state when absent).
func (s *Status) Peer(id string) (state, role string) {
	for _, n := range s.Cluster.Nodes {
		if n.ID == id && !n.Self {
			return n.State, n.Role
		}
	}
	return "", ""
}

// Resource returns the named resource's state and failure count.
func (s *Status) Resource(name string) (state string, failures int) {
	for _, r := range s.Group.Resources {
		if r.Name == name {
			return r.State, r.Failures
		}
	}
	return "", 0
}

// InSync reports a running volume with both legs in sync and no resync.
func (v *VolumeStatus) InSync() bool {
	return v != nil && v.Legs[0].State == "in_sync" && v.Legs[1].State == "in_sync" && !v.Resync.Running
}

// CallFunc sends one control operation to the mirrord whose socket is
// addr (unix:PATH) and decodes its result; cmd/internal/control.Call is
// one.
type CallFunc func(addr, op string, args, result any) error

// call is the control protocol's client side (cmd/internal/control: one
// JSON request line, one JSON response line), for users outside cmd/
// that cannot import it (the benchmark). Tests pass control.Call.
func call(addr, op string, args, result any) error {
	if len(addr) < 6 || addr[:5] != "unix:" {
		return fmt.Errorf("control address %q: want unix:PATH", addr)
	}
	c, err := net.DialTimeout("unix", addr[5:], 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req := struct {
		Op   string `json:"op"`
		Args any    `json:"args,omitempty"`
	}{op, args}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return err
	}
	var resp struct {
		OK     bool            `json:"ok"`
		Error  string          `json:"error"`
		Result json.RawMessage `json:"result"`
	}
	r := bufio.NewReaderSize(c, 1<<20)
	if err := json.NewDecoder(r).Decode(&resp); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if !resp.OK {
		return errors.New(resp.Error)
	}
	if result != nil && len(resp.Result) > 0 {
		return json.Unmarshal(resp.Result, result)
	}
	return nil
}
