package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources"
)

// renderCluster prints the "cluster" part of mirrord's status reply (see
// printCluster). mirrorctl status calls it when a membership-only reply has
// a "cluster" key; mirrorctl nodes adds the index table.
func renderCluster(w io.Writer, raw json.RawMessage) error {
	var st heartbeat.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("decoding mirrord's cluster status: %w", err)
	}
	return printCluster(w, st)
}

// printCluster prints this node's role and term, then one line per node
// with its state, role, takeover term, what its resource group does (from
// the app state in its heartbeats, when nodes carry one) and the state of
// every medium towards it, then the alarms.
func printCluster(w io.Writer, st heartbeat.Status) error {
	fmt.Fprintf(w, "cluster %s: this node %s is %s (term %d); coordinator %s; up %s\n",
		st.Cluster, st.Self, st.Role, st.Term, st.Coordinator, st.Uptime.Truncate(time.Second))
	var media []string
	withApp := false
	for _, n := range st.Nodes {
		withApp = withApp || len(n.App) > 0
		for _, m := range n.Media {
			if !contains(media, m.Name) {
				media = append(media, m.Name)
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE\tSTATE\tROLE\tTERM")
	if withApp {
		fmt.Fprintf(tw, "\tGROUP")
	}
	fmt.Fprintf(tw, "\tPING")
	for _, m := range media {
		fmt.Fprintf(tw, "\t%s", strings.ToUpper(m))
	}
	fmt.Fprintln(tw)
	for _, n := range st.Nodes {
		state, ping := n.State.String(), "-"
		if n.Self {
			state = "self"
		}
		if n.Ping != nil {
			ping = fmt.Sprint(*n.Ping)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d", n.ID, state, n.Role, n.Term)
		if withApp {
			fmt.Fprintf(tw, "\t%s", groupCell(n))
		}
		fmt.Fprintf(tw, "\t%s", ping)
		for _, name := range media {
			cell := "-"
			for _, m := range n.Media {
				if m.Name == name {
					cell = m.State.String()
					if m.LastHeard >= 0 && m.State != heartbeat.MediumUp {
						cell += fmt.Sprintf(" (%s)", m.LastHeard.Truncate(100*time.Millisecond))
					}
				}
			}
			fmt.Fprintf(tw, "\t%s", cell)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if n.Self && n.PingNote != "" {
			fmt.Fprintf(w, "%s's last ping round: %s\n", n.ID, n.PingNote)
		}
		if n.State == heartbeat.NodePartitioned {
			fmt.Fprintf(w, "ALARM: %s is partitioned: silent on every network medium, its disk slot still advances\n", n.ID)
		}
	}
	r := st.Rejected
	if bad := r.Malformed + r.BadAuth + r.WrongCluster + r.Replayed + r.UnknownNode + r.WrongMedium; bad > 0 {
		fmt.Fprintf(w, "refused frames: %d bad auth, %d replayed, %d malformed, %d wrong medium, %d unknown node, %d other cluster\n",
			r.BadAuth, r.Replayed, r.Malformed, r.WrongMedium, r.UnknownNode, r.WrongCluster)
	}
	if r.Unconfirmed > 0 {
		fmt.Fprintf(w, "unconfirmed frames: %d (authentic, but not echoing this node's run nonce: no beats; many of them while a peer is dead mean it cannot hear this node, or a replay)\n", r.Unconfirmed)
	}
	if st.Stalls > 0 {
		fmt.Fprintf(w, "loop stalls: %d, longest %s (the box is overloaded or mirrord was stopped; the peer may have seen this node silent)\n", st.Stalls, st.LongestStall.Truncate(time.Millisecond))
	}
	return nil
}

// groupCell says what node n's resource group does, from its app state:
// the group state, the resource in hand, and the flags that keep it out.
func groupCell(n heartbeat.NodeStatus) string {
	if len(n.App) == 0 {
		return "-"
	}
	a, err := resources.UnmarshalAppState(n.App)
	if err != nil {
		return "(unreadable app state)"
	}
	cell := groupState(a.State, a.Current)
	var flags []string
	if a.Standby {
		flags = append(flags, "standby")
	}
	if a.Maintenance {
		flags = append(flags, "maintenance")
	}
	if !a.Eligible && !a.Standby {
		flags = append(flags, "ineligible")
	}
	if len(flags) > 0 {
		cell += " (" + strings.Join(flags, ", ") + ")"
	}
	return cell
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// renderTable prints the index table (R7).
func renderTable(w io.Writer, t heartbeat.Table) error {
	if t.Version == 0 {
		fmt.Fprintln(w, "index table: not built yet (no coordinator elected)")
		return nil
	}
	fmt.Fprintf(w, "index table version %d, built by %s\n", t.Version, t.Coordinator)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESSES\tBACKUP TARGET\tTARGET IP\tSTATE")
	for _, r := range t.Rows {
		target, ip := string(r.BackupTarget), r.BackupAddr
		if target == "" {
			target, ip = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, strings.Join(r.Addresses, ","), target, ip, r.State)
	}
	return tw.Flush()
}
