package peers

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// pacemakerPhases are the steps of a takeover by survivor of victim's
// group, in order.
func pacemakerPhases(survivor, victim string) []halab.LogStep {
	on := " on " + survivor + ": ok"
	return []halab.LogStep{
		{Name: "token lost", Log: "corosync", Match: []string{"A processor failed, forming new configuration"}},
		{Name: "membership without victim", Log: "corosync", Match: []string{"A new membership", "Members left"}},
		{Name: "victim fenced", Log: "pacemaker", Match: []string{"Peer " + victim + " was terminated", ": OK"}},
		{Name: "fs started", Log: "pacemaker", Match: []string{"Result of start operation for fs" + on}},
		{Name: "vip started", Log: "pacemaker", Match: []string{"Result of start operation for vip" + on}},
		{Name: "db started", Log: "pacemaker", Match: []string{"Result of start operation for db" + on}},
	}
}

// logTime parses the time stamp that starts a Corosync (timestamp: hires)
// or Pacemaker log line, "Dec 03 11:46:03.608", in the year of ref.
func logTime(line string, ref time.Time) (time.Time, bool) {
	const layout = "Jan 02 15:04:05.000"
	if len(line) < len(layout) {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation(layout, line[:len(layout)], ref.Location())
	if err != nil {
		return time.Time{}, false
	}
	return t.AddDate(ref.Year(), 0, 0), true
}

// findPhases scans logs (name → lines) for phases after fault and returns
// the ones found, each as its time since the fault. Log stamps have
// millisecond resolution, so a line of the fault's own millisecond counts.
func findPhases(logs map[string][]string, phases []halab.LogStep, fault time.Time) []halab.Phase {
	stamp := func(line string) (time.Time, bool) { return logTime(line, fault) }
	out, _ := halab.StepLogs{Logs: logs, Stamp: stamp, Tick: time.Millisecond}.Find(phases, fault)
	return out
}

// Breakdown reads the survivor's Corosync and Pacemaker logs for the steps
// of the takeover after fault.
func (p *Pacemaker) Breakdown(_ context.Context, fault time.Time, survivor string) ([]halab.Phase, error) {
	n := p.Lab.Node(survivor)
	logs := map[string][]string{}
	for name, path := range map[string]string{
		"corosync":  n.Path("/var/log/corosync/corosync.log"),
		"pacemaker": n.Path("/var/log/pacemaker/pacemaker.log"),
	} {
		lines, err := halab.ReadLines(path)
		if err != nil {
			return nil, fmt.Errorf("%s's %s log: %w", survivor, name, err)
		}
		logs[name] = lines
	}
	all := pacemakerPhases(survivor, halab.Peer(survivor))
	if p.cleanMove {
		// The ping rule moved the group: the victim stopped it and
		// nobody fenced it; the membership steps and the fence in the
		// logs are Recover's crash, after the move.
		moved := all[:0]
		for _, ph := range all {
			if ph.Log == "pacemaker" && strings.HasSuffix(ph.Name, " started") {
				moved = append(moved, ph)
			}
		}
		all = moved
	}
	phases := findPhases(logs, all, fault)
	if p.cleanMove {
		return phases, nil
	}
	fenced, started := false, false
	for _, ph := range phases {
		fenced = fenced || ph.Name == "victim fenced"
		started = started || ph.Name == "fs started"
	}
	if started && !fenced {
		return phases, fmt.Errorf("%s started the group without fencing %s first; see %s", survivor, halab.Peer(survivor), n.Path("/var/log/pacemaker/pacemaker.log"))
	}
	return phases, nil
}
