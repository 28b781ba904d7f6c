package node

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hamirror/hamirror/resources"
)

// Reloading the cluster file (SIGHUP, or the "reload" control op that
// `mirrorctl reload` sends) re-reads and validates the whole file first:
// a file that does not load is refused as a whole and the running
// configuration is unchanged. A valid file is compared with what runs,
// key by key:
//
//   - Applied live: group.migration_threshold, group.failure_timeout,
//     group.start_failure_is_fatal, each resource's monitor_interval and
//     start/stop/monitor timeouts (resources.Group.Reconfigure: the next
//     operation uses them), log.level, and metrics.listen (the new
//     address is bound before the old one is closed; if it cannot be
//     bound, that key is refused and the old endpoint keeps serving).
//   - Refused, each named with what runs and what the file says, until
//     mirrord restarts: everything the node built its parts from at
//     start. The cluster's identity and links (cluster.*, nodes, disks,
//     ping, control): membership opened its sockets, serial line and disk
//     slots with them and the peer expects them. timing: membership's
//     machine, its watchdog and the loop's tick derive from it, and the
//     peer judges this node's keepalives by its own copy (change both
//     nodes, restarting the standby first). The key file: every frame is
//     signed with the key read at start. The volume, iscsi and fencing
//     sections: the sessions are logged in, the engine opened with those
//     options and the reservation keys registered. The group's makeup
//     (resources added, removed, reordered, retyped or with other
//     parameters; group.order): the agents were built from
//     them. The services section: the channel listens and the log is open.
//
// The refused keys do not stop the live ones from applying: the answer
// lists both, and a later reload lists the refused ones again until a
// restart.

// ReloadResult is the answer of a reload.
type ReloadResult struct {
	Path string `json:"path"`
	// Applied are the live changes now in effect.
	Applied []Change `json:"applied,omitempty"`
	// Refused are the changes in the file that need a restart of
	// mirrord; the node runs on without them.
	Refused []Change `json:"refused,omitempty"`
	Message string   `json:"message"`
}

// Change is one key that differs between the file and what runs.
type Change struct {
	Key  string `json:"key"`
	Old  string `json:"old,omitempty"`
	New  string `json:"new,omitempty"`
	Note string `json:"note,omitempty"`
}

func (c Change) String() string {
	s := c.Key
	if c.Old != "" || c.New != "" {
		s += fmt.Sprintf(" (%s -> %s)", orNone(c.Old), orNone(c.New))
	}
	if c.Note != "" {
		s += ": " + c.Note
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// Reload re-reads the cluster file this node was started with, applies
// what can change live and reports the rest. An error means the file was
// refused as a whole (it does not load, or the loop did not answer) and
// nothing changed.
func (n *Node) Reload(ctx context.Context) (ReloadResult, error) {
	o := n.ops
	o.reloadMu.Lock()
	defer o.reloadMu.Unlock()
	res := ReloadResult{Path: n.cfg.Path}
	nc, err := LoadConfig(n.cfg.Path, n.self)
	if err == nil && n.opt.Override != nil {
		n.opt.Override(nc)
	}
	if err != nil {
		n.reloaded(res, err)
		return res, fmt.Errorf("reload refused, the running configuration is unchanged: %w", err)
	}
	// The group lives on the loop: compare and apply there.
	v, err := n.call(ctx, func(now time.Time) (any, error) {
		live, refused := diffConfig(n.cfg, nc)
		eff := liveGroup(n.cfg.Group, nc.Group)
		if err := n.group.Reconfigure(now, eff); err != nil {
			return nil, err
		}
		n.cfg.Group = eff
		return [2][]Change{live, refused}, nil
	})
	if err != nil {
		n.reloaded(res, err)
		return res, fmt.Errorf("reload refused, the running configuration is unchanged: %w", err)
	}
	ch := v.([2][]Change)
	res.Applied, res.Refused = ch[0], ch[1]
	if nc.Log.Level != n.cfg.Log.Level {
		res.Applied = append(res.Applied, Change{Key: "log.level", Old: n.cfg.Log.Level.String(), New: nc.Log.Level.String()})
		o.level.Set(nc.Log.Level)
		n.cfg.Log = nc.Log
	}
	if nc.Metrics.Listen != n.cfg.Metrics.Listen {
		c := Change{Key: "metrics.listen", Old: n.cfg.Metrics.Listen, New: nc.Metrics.Listen}
		if err := o.metrics.serve(nc.Metrics.Listen); err != nil {
			c.Note = fmt.Sprintf("%v; still serving on %s", err, orNone(n.cfg.Metrics.Listen))
			res.Refused = append(res.Refused, c)
		} else {
			res.Applied = append(res.Applied, c)
			n.cfg.Metrics = nc.Metrics
		}
	}
	n.reloaded(res, nil)
	return res, nil
}

// reloaded logs a reload's outcome, fills in its message and counts it.
func (n *Node) reloaded(res ReloadResult, err error) {
	o := n.ops
	o.figMu.Lock()
	defer o.figMu.Unlock()
	o.reloads.LastAt, o.reloads.LastOK = time.Now(), err == nil
	switch {
	case err != nil:
		o.reloads.Refused++
		n.log.Error("reload refused: the running configuration is unchanged", "file", res.Path, "err", err)
		return
	case len(res.Refused) > 0:
		o.reloads.Partial++
	default:
		o.reloads.Applied++
	}
	o.reloads.Pending = len(res.Refused)
}

// message is what the operator reads about a reload.
func (r ReloadResult) message() string {
	var b strings.Builder
	if len(r.Applied) == 0 && len(r.Refused) == 0 {
		return fmt.Sprintf("%s: nothing changed", r.Path)
	}
	if len(r.Applied) > 0 {
		fmt.Fprintf(&b, "applied: %s", joinChanges(r.Applied))
	}
	if len(r.Refused) > 0 {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "NOT applied: %s", joinChanges(r.Refused))
		if slices.ContainsFunc(r.Refused, func(c Change) bool { return strings.Contains(c.Note, restartNote) }) {
			b.WriteString(". To apply what needs a restart: restart mirrord on the standby node, move the group to it, then restart the other")
		}
	}
	return b.String()
}

func joinChanges(cs []Change) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return strings.Join(s, "; ")
}

// reloadAndLog reloads and logs the outcome (SIGHUP).
func (n *Node) reloadAndLog(ctx context.Context) (ReloadResult, error) {
	res, err := n.Reload(ctx)
	if err != nil {
		return res, err
	}
	res.Message = res.message()
	if len(res.Refused) > 0 {
		n.log.Warn("reload: "+res.Message, "file", res.Path)
	} else {
		n.log.Info("reload: "+res.Message, "file", res.Path)
	}
	return res, nil
}

// ReloadOn reloads the cluster file at each signal on sig (cmd/mirrord:
// SIGHUP) and logs what changed, until ctx ends.
func (n *Node) ReloadOn(ctx context.Context, sig <-chan os.Signal) {
	for {
		select {
		case <-sig:
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			n.reloadAndLog(rctx)
			cancel()
		case <-ctx.Done():
			return
		}
	}
}

// reloadHandler is the "reload" control op: no arguments; the answer is
// the ReloadResult, an error when the file was refused.
func (n *Node) reloadHandler(raw json.RawMessage) (any, error) {
	if len(raw) > 0 && string(raw) != "null" && string(raw) != "{}" {
		return nil, fmt.Errorf("reload takes no arguments")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n.reloadAndLog(ctx)
}

// liveGroup is the group configuration that runs after a reload: what
// runs, with the live settings of the file (resources matched by name
// and type; the rest stays as it is).
func liveGroup(old, nw resources.Config) resources.Config {
	eff := old
	eff.MigrationThreshold, eff.FailureTimeout, eff.StartFailureIsFatal = nw.MigrationThreshold, nw.FailureTimeout, nw.StartFailureIsFatal
	eff.Resources = append([]resources.Resource(nil), old.Resources...)
	for i, r := range eff.Resources {
		for _, f := range nw.Resources {
			if f.Name == r.Name && f.Type == r.Type {
				eff.Resources[i].MonitorInterval, eff.Resources[i].MonitorTimeout = f.MonitorInterval, f.MonitorTimeout
				eff.Resources[i].StartTimeout, eff.Resources[i].StopTimeout = f.StartTimeout, f.StopTimeout
			}
		}
	}
	return eff
}
