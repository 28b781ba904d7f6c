package peers

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// logPhase is a takeover step Corosync or Pacemaker logs on the survivor:
// the first line after the fault holding every one of match.
type logPhase struct {
	name  string
	log   string // "corosync" or "pacemaker"
	match []string
}

// pacemakerPhases are the steps of a takeover by survivor of victim's
// group, in order.
func pacemakerPhases(survivor, victim string) []logPhase {
	on := " on " + survivor + ": ok"
	return []logPhase{
		{"token lost", "corosync", []string{"A processor failed, forming new configuration"}},
		{"membership without victim", "corosync", []string{"A new membership", "Members left"}},
		{"victim fenced", "pacemaker", []string{"Peer " + victim + " was terminated", ": OK"}},
		{"fs started", "pacemaker", []string{"Result of start operation for fs" + on}},
		{"vip started", "pacemaker", []string{"Result of start operation for vip" + on}},
		{"db started", "pacemaker", []string{"Result of start operation for db" + on}},
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
func findPhases(logs map[string][]string, phases []logPhase, fault time.Time) []halab.Phase {
	from := fault.Truncate(time.Millisecond)
	var out []halab.Phase
	for _, ph := range phases {
	lines:
		for _, line := range logs[ph.log] {
			t, ok := logTime(line, fault)
			if !ok || t.Before(from) {
				continue
			}
			for _, m := range ph.match {
				if !strings.Contains(line, m) {
					continue lines
				}
			}
			out = append(out, halab.Phase{Name: ph.name, At: max(t.Sub(fault), 0)})
			break
		}
	}
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
		lines, err := readLines(path)
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
			if ph.log == "pacemaker" && strings.HasSuffix(ph.name, " started") {
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

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}
