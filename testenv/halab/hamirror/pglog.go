package hamirror

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// pgLogName is the server log the db resource writes (the agent's
// default: in the data directory, on the volume).
const pgLogName = "hamirror-postgresql.log"

// pgPhases are the steps of PostgreSQL's start after a crash, as its
// server log says them (PostgreSQL 15, the lab's log_line_prefix '%m
// [%p] ' in UTC and log_checkpoints on): the postmaster launched, crash
// recovery's redo started and done (one line when there is nothing to
// redo), the end-of-recovery checkpoint complete, and the server
// accepting connections. Each phase is any one of its lines.
var pgPhases = []struct {
	name  string
	lines []string
}{
	{"db launched", []string{"LOG:  starting PostgreSQL"}},
	{"redo starts", []string{"LOG:  redo starts at", "LOG:  redo is not required"}},
	{"redo done", []string{"LOG:  redo done at", "LOG:  redo is not required"}},
	{"recovery checkpoint", []string{"LOG:  checkpoint complete"}},
	{"db accepts", []string{"LOG:  database system is ready to accept connections"}},
}

// pgLogPhases returns the steps of the first start of PostgreSQL after
// fault in its server log, each the first line after the step ahead of it
// (the same line may end two steps). The log is on the volume: what the
// killed node wrote last never reached it, and where the file's size got
// there but its data did not, the file holds NUL bytes, glued to the
// first line the new server wrote.
func pgLogPhases(lines []string, fault time.Time) []halab.Phase {
	var out []halab.Phase
	for _, line := range lines {
		line = strings.TrimLeft(line, "\x00")
		t, ok := pgLogTime(line)
		if !ok || t.Before(fault) {
			continue
		}
		for len(out) < len(pgPhases) && slices.ContainsFunc(pgPhases[len(out)].lines, func(m string) bool { return strings.Contains(line, m) }) {
			out = append(out, halab.Phase{Name: pgPhases[len(out)].name, At: t.Sub(fault)})
		}
	}
	return out
}

// pgLogTime parses the '%m' timestamp that starts a server log line:
// "2026-12-03 17:32:02.123 UTC".
func pgLogTime(line string) (time.Time, bool) {
	const layout = "2006-01-02 15:04:05.000 MST"
	if len(line) < len(layout) || line[len(layout)-3:len(layout)] != "UTC" {
		return time.Time{}, false
	}
	t, err := time.Parse(layout, line[:len(layout)])
	return t, err == nil
}

// withPGPhases reads the survivor's server log (on the volume, mounted
// there) and puts its steps after the mirrord step named after.
func (s *System) withPGPhases(ctx context.Context, phases []halab.Phase, fault time.Time, survivor, after string) ([]halab.Phase, error) {
	out, err := s.Lab.Node(survivor).Run(ctx, "cat", filepath.Join(s.p.pgdata, pgLogName))
	if err != nil {
		return phases, err
	}
	i := slices.IndexFunc(phases, func(p halab.Phase) bool { return p.Name == after })
	if i < 0 {
		return phases, nil
	}
	return slices.Insert(phases, i+1, pgLogPhases(strings.Split(out, "\n"), fault)...), nil
}
