package hamirror

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// The logs a breakdown reads: the survivor's mirrord log, and the
// victim's (a hand-over's first steps are the victim's).
const (
	survivorLog = "survivor"
	victimLog   = "victim"
)

func done(op string) []string { return []string{"msg=done", `op="` + op + `"`} }

// takeoverPhases are the steps of survivor's takeover from victim, in
// order: the dead verdict, the fence, then each resource's start.
func takeoverPhases(victim string) []halab.LogStep {
	return []halab.LogStep{
		// The group acting on the dead verdict (membership's own log line
		// of it may be written after the fence).
		{Name: "detect", Log: survivorLog, Match: []string{"fencing " + victim + " before starting the group"}},
		{Name: "fence", Log: survivorLog, Match: done("fence " + victim)},
		{Name: "assemble", Log: survivorLog, Match: done("start volume")},
		{Name: "mount", Log: survivorLog, Match: done("start fs")},
		{Name: "VIP", Log: survivorLog, Match: done("start vip")},
		{Name: "database ready", Log: survivorLog, Match: done("start db")},
	}
}

// handoverPhases are the steps of a hand-over after the victim lost the
// public network: it sees the peer reach more ping targets and hands the
// active role over, stops the group, and the survivor starts it (no
// fence: the victim stopped cleanly).
func handoverPhases() []halab.LogStep {
	return []halab.LogStep{
		{Name: "detect", Log: victimLog, Match: []string{"public ping targets", "handing over the active role"}},
		{Name: "stopped", Log: victimLog, Match: done("stop fence")},
		{Name: "assemble", Log: survivorLog, Match: done("start volume")},
		{Name: "mount", Log: survivorLog, Match: done("start fs")},
		{Name: "VIP", Log: survivorLog, Match: done("start vip")},
		{Name: "database ready", Log: survivorLog, Match: done("start db")},
	}
}

// arrayPhases: the active node fails the dead array's leg and runs on.
var arrayPhases = []halab.LogStep{{Name: "leg failed", Log: survivorLog, Match: []string{"leg failed; volume continues degraded"}}}

// Breakdown reads the nodes' mirrord logs for the steps after the fault
// at fault: for a node killed or frozen, survivor's takeover (detect: the
// peer declared dead, fence, assemble: the volume started, mount, VIP,
// database ready); for a public cable pulled, the hand-over (detect: the
// victim yields for the ping targets, stopped, then the survivor's
// starts); for an array killed, when the active node failed its leg.
// With DatabaseSteps, a move's breakdown also has PostgreSQL's own steps
// after VIP (pgPhases, from its server log) and, before database ready,
// agent saw it up (the db agent found the server accepting connections).
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
	steps := s.DatabaseSteps && f != halab.FaultArrayKill
	if steps {
		agent := halab.LogStep{Name: "agent saw it up", Log: survivorLog, Match: []string{`msg="PostgreSQL started"`}}
		phases = slices.Insert(slices.Clone(phases), len(phases)-1, agent)
	}
	logs := map[string][]string{}
	for name, id := range map[string]string{survivorLog: survivor, victimLog: victim} {
		lines, err := halab.ReadLines(filepath.Join(s.Lab.Node(id).Dir(), "log", "mirrord.log"))
		if err != nil {
			return nil, err
		}
		logs[name] = lines
	}
	out, err := findPhases(logs, phases, fault)
	if err != nil || !steps {
		return out, err
	}
	return s.withPGPhases(ctx, out, fault, survivor, "VIP")
}

// findPhases returns, for each phase found in its log (slog text
// records) after fault, its time since the fault. A phase found before
// the one ahead of it in the order is an error: the takeover went out of
// order.
func findPhases(logs map[string][]string, phases []halab.LogStep, fault time.Time) ([]halab.Phase, error) {
	return halab.StepLogs{Logs: logs, Stamp: logTime, InOrder: true}.Find(phases, fault)
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
