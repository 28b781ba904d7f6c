package hamirror

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// phase is one step of a takeover as a node's mirrord logs it: the first
// line after the fault holding every one of match, in the survivor's log
// (or the victim's, onVictim).
type phase struct {
	name     string
	onVictim bool
	match    []string
}

func done(op string) []string { return []string{"msg=done", `op="` + op + `"`} }

// takeoverPhases are the steps of survivor's takeover from victim, in
// order: the dead verdict, the fence, then each resource's start.
func takeoverPhases(victim string) []phase {
	return []phase{
		// The group acting on the dead verdict (membership's own log line
		// of it may be written after the fence).
		{"detect", false, []string{"fencing " + victim + " before starting the group"}},
		{"fence", false, done("fence " + victim)},
		{"assemble", false, done("start volume")},
		{"mount", false, done("start fs")},
		{"VIP", false, done("start vip")},
		{"agent saw it up", false, []string{`msg="PostgreSQL started"`}},
		{"database ready", false, done("start db")},
	}
}

// handoverPhases are the steps of a hand-over after the victim lost the
// public network: it sees the peer reach more ping targets and hands the
// active role over, stops the group, and the survivor starts it (no
// fence: the victim stopped cleanly).
func handoverPhases() []phase {
	return []phase{
		{"detect", true, []string{"public ping targets", "handing over the active role"}},
		{"stopped", true, done("stop fence")},
		{"assemble", false, done("start volume")},
		{"mount", false, done("start fs")},
		{"VIP", false, done("start vip")},
		{"agent saw it up", false, []string{`msg="PostgreSQL started"`}},
		{"database ready", false, done("start db")},
	}
}

// arrayPhases: the active node fails the dead array's leg and runs on.
var arrayPhases = []phase{{"leg failed", false, []string{"leg failed; volume continues degraded"}}}

// Breakdown reads the nodes' mirrord logs for the steps after the fault
// at fault: for a node killed or frozen, survivor's takeover (detect: the
// peer declared dead, fence, assemble: the volume started, mount, VIP,
// agent saw it up: the db agent found the server accepting connections,
// database ready: its start returned); for a public cable pulled, the
// hand-over (detect: the victim yields for the ping targets, stopped,
// then the survivor's starts); for an array killed, when the active node
// failed its leg. After a move, PostgreSQL's own steps from its server
// log come after VIP (see pgPhases).
func (s *System) Breakdown(ctx context.Context, fault time.Time, survivor string) ([]halab.Phase, error) {
	s.mu.Lock()
	f := s.fault
	s.mu.Unlock()
	victim := halab.Peer(survivor)
	phases := takeoverPhases(victim)
	switch f {
	case halab.FaultPublicDown:
		phases = handoverPhases()
	case halab.FaultArrayKill:
		phases, victim = arrayPhases, survivor
	}
	logs := map[bool][]string{}
	for _, onVictim := range []bool{false, true} {
		id := survivor
		if onVictim {
			id = victim
		}
		lines, err := readLines(filepath.Join(s.Lab.Node(id).Dir(), "log", "mirrord.log"))
		if err != nil {
			return nil, err
		}
		logs[onVictim] = lines
	}
	out, err := findPhases(logs, phases, fault)
	if err != nil || f == halab.FaultArrayKill {
		return out, err
	}
	return s.withPGPhases(ctx, out, fault, survivor, "VIP")
}

// findPhases returns, for each phase found in its log (slog text
// records; logs by onVictim) after fault, its time since the fault. A phase found before the one
// ahead of it in the order is an error: the takeover went out of order.
func findPhases(logs map[bool][]string, phases []phase, fault time.Time) ([]halab.Phase, error) {
	var out []halab.Phase
	var last time.Time
	for _, ph := range phases {
	lines:
		for _, line := range logs[ph.onVictim] {
			t, ok := logTime(line)
			if !ok || t.Before(fault) {
				continue
			}
			for _, m := range ph.match {
				if !strings.Contains(line, m) {
					continue lines
				}
			}
			if t.Before(last) {
				return out, fmt.Errorf("%s at %v came before the step ahead of it", ph.name, t.Sub(fault))
			}
			last = t
			out = append(out, halab.Phase{Name: ph.name, At: t.Sub(fault)})
			break
		}
	}
	return out, nil
}

// logTime parses the time=... attribute that starts a slog text record.
func logTime(line string) (time.Time, bool) {
	v, ok := strings.CutPrefix(line, "time=")
	if !ok {
		return time.Time{}, false
	}
	v, _, _ = strings.Cut(v, " ")
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
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
