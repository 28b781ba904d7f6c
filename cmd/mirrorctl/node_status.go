package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/node"
)

// renderNode prints a cluster node's status for a person: the cluster
// (nodes, media, roles, terms, each node's group), this node's group and
// its resources, the volume served here, and the peer's volume knowledge.
func renderNode(w io.Writer, st node.Status) error {
	if err := printCluster(w, st.Cluster); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := printGroup(w, st); err != nil {
		return err
	}
	if !hasVolumeResource(st.Group) {
		return nil
	}
	fmt.Fprintln(w)
	if st.Volume != nil {
		printStatus(w, fromNodeVolume(st.Volume))
	} else {
		fmt.Fprintf(w, "volume: not served on %s (it runs where the group runs)\n", st.Node)
	}
	printPeerVolume(w, st)
	return nil
}

func hasVolumeResource(g resources.Status) bool {
	for _, r := range g.Resources {
		if r.Type == resources.TypeVolume {
			return true
		}
	}
	return false
}

// printGroup prints this node's group: its state, every resource, and each
// condition that keeps it from running here, with what to do about it.
func printGroup(w io.Writer, st node.Status) error {
	g := st.Group
	if len(g.Resources) == 0 {
		fmt.Fprintf(w, "group on %s: no resources configured (membership only)\n", st.Node)
		return nil
	}
	state := groupState(g.State, g.Current)
	elig := "eligible"
	if !g.Eligible {
		elig = "not eligible"
	}
	fmt.Fprintf(w, "group on %s: %s (proposed role %s, %s)\n", st.Node, state, g.Role, elig)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  RESOURCE\tTYPE\tSTATE\tFAILURES\tLAST ERROR")
	for _, r := range g.Resources {
		last := r.LastError
		if last == "" {
			last = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d/%d\t%s\n", r.Name, r.Type, r.State, r.Failures, g.MigrationThreshold, oneLine(last))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	window := "until mirrorctl cleanup"
	if g.FailureTimeout > 0 {
		window = "for " + g.FailureTimeout.String()
	}
	fmt.Fprintf(w, "  %d failures of one resource move the group; a failure counts %s\n", g.MigrationThreshold, window)
	switch g.State {
	case resources.GroupBlocked:
		fmt.Fprintf(w, "  BLOCKED: %s\n  no node starts the group until this is resolved: make sure the resource is stopped (by hand if need be), then run: mirrorctl cleanup\n", g.Reason)
	case resources.GroupFenced:
		fmt.Fprintf(w, "  FENCED: %s\n  another node took the arrays over; this node stays out until: mirrorctl cleanup (or a mirrord restart)\n", g.Reason)
	case resources.GroupFailed:
		fmt.Fprintf(w, "  FAILED: %s\n  this node is out until the failures expire or: mirrorctl cleanup\n", g.Reason)
	}
	if g.Waiting != "" {
		fmt.Fprintf(w, "  waiting: %s\n", g.Waiting)
	}
	if g.Standby {
		fmt.Fprintf(w, "  standby: %s does not run the group (mirrorctl unstandby)\n", st.Node)
	}
	if g.Maintenance {
		fmt.Fprintf(w, "  MAINTENANCE: monitors and actions are paused on %s; resources are left as they are (mirrorctl maintenance off)\n", st.Node)
	}
	if g.Moving {
		fmt.Fprintf(w, "  moving: the group is leaving %s for a peer\n", st.Node)
	}
	if where := runsOn(st); len(where) > 0 && g.State != resources.GroupRunning {
		fmt.Fprintf(w, "  the group runs on %s\n", strings.Join(where, ", "))
	}
	return nil
}

// groupState is a group state with the resource in hand: "starting
// volume", "blocked on app".
func groupState(s resources.GroupState, current string) string {
	switch {
	case current == "":
		return s.String()
	case s == resources.GroupStarting || s == resources.GroupStopping:
		return s.String() + " " + current
	}
	return s.String() + " on " + current
}

// printPeerVolume prints the peer's volume knowledge this node holds.
func printPeerVolume(w io.Writer, st node.Status) {
	p := st.Peer
	switch {
	case p == nil && st.Volume != nil:
		fmt.Fprintln(w, "peer volume knowledge: none held (this node runs the volume and publishes its state to the peer)")
		return
	case p == nil:
		fmt.Fprintln(w, "peer volume knowledge: none held (a takeover with one array unreachable would refuse the lone leg)")
		return
	}
	when := "kept from an earlier run"
	if p.Confirmed {
		when = "received in this run"
	}
	fmt.Fprintf(w, "peer volume knowledge: from %s, seq %d, %s: %s\n", p.From, p.Seq, when, p.Knowledge)
	use := "a takeover would use it to start on a lone leg known current"
	if !p.Trusted {
		use = "a takeover would NOT use it (the lone leg is refused unless its own metadata proves it current)"
	}
	if p.Note != "" {
		use += ": " + p.Note
	}
	fmt.Fprintf(w, "  %s\n", use)
}

// runsOn lists the nodes whose group runs, by their app state: this node
// and every live peer.
func runsOn(st node.Status) []string {
	var ids []string
	for _, n := range st.Cluster.Nodes {
		if !n.Self && !live(n.State) || len(n.App) == 0 {
			continue
		}
		if a, err := resources.UnmarshalAppState(n.App); err == nil && a.State == resources.GroupRunning {
			ids = append(ids, string(n.ID))
		}
	}
	if st.Group.State == resources.GroupRunning && !contains(ids, string(st.Node)) {
		ids = append(ids, string(st.Node))
	}
	return ids
}

func live(s heartbeat.NodeState) bool {
	return s == heartbeat.NodeAlive || s == heartbeat.NodeSuspect || s == heartbeat.NodePartitioned
}

// nodeNeedsAttention is status's exit code 2 for a cluster node: the group
// runs nowhere, or it is blocked, fenced or failed here, or the volume
// served here is not clean.
func nodeNeedsAttention(st node.Status) bool {
	switch st.Group.State {
	case resources.GroupBlocked, resources.GroupFenced, resources.GroupFailed:
		return true
	}
	if st.Volume != nil && st.Volume.State != "clean" {
		return true
	}
	return len(st.Group.Resources) > 0 && len(runsOn(st)) == 0
}

// oneLine keeps an agent's error on one table line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 160 {
		s = string(r[:157]) + "..."
	}
	return s
}
