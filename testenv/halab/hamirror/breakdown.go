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

// phase is one step of a takeover as the survivor's mirrord logs it: the
// first line after the fault holding every one of match.
type phase struct {
	name  string
	match []string
}

// takeoverPhases are the steps of survivor's takeover from victim, in
// order: the dead verdict, the fence, then each resource's start.
func takeoverPhases(victim string) []phase {
	done := func(op string) []string { return []string{"msg=done", `op="` + op + `"`} }
	return []phase{
		{"detect", []string{"node " + victim + ": ", "-> dead"}},
		{"fence", done("fence " + victim)},
		{"assemble", done("start volume")},
		{"mount", done("start fs")},
		{"VIP", done("start vip")},
		{"database ready", done("start db")},
	}
}

// Breakdown reads survivor's mirrord log for the steps of its takeover
// after fault: detect (the peer declared dead), fence, assemble (the
// volume started), mount, VIP, database ready.
func (s *System) Breakdown(_ context.Context, fault time.Time, survivor string) ([]halab.Phase, error) {
	lines, err := readLines(filepath.Join(s.Lab.Node(survivor).Dir(), "log", "mirrord.log"))
	if err != nil {
		return nil, err
	}
	return findPhases(lines, takeoverPhases(halab.Peer(survivor)), fault)
}

// findPhases returns, for each phase found in lines (slog text records)
// after fault, its time since the fault. A phase found before the one
// ahead of it in the order is an error: the takeover went out of order.
func findPhases(lines []string, phases []phase, fault time.Time) ([]halab.Phase, error) {
	var out []halab.Phase
	var last time.Time
	for _, ph := range phases {
	lines:
		for _, line := range lines {
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
