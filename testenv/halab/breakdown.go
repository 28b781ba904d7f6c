package halab

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"
)

// LogStep is one step of a takeover as a daemon's log shows it: the first
// line of log Log, stamped at or after the fault, that holds every one of
// Match.
type LogStep struct {
	Name  string
	Log   string // a key of StepLogs.Logs
	Match []string
}

// StepLogs are the logs a System's Breakdown reads its steps from.
type StepLogs struct {
	Logs map[string][]string // lines by log name
	// Stamp returns the time a line was logged (false: a line without one).
	Stamp func(line string) (time.Time, bool)
	// Tick is the stamps' resolution: a line stamped in the fault's own
	// tick counts, at 0 from the fault (0: exact stamps).
	Tick time.Duration
	// InOrder makes a step stamped before the step ahead of it an error:
	// the takeover went out of order.
	InOrder bool
}

// Find returns, for each of steps found in its log after fault, its time
// since the fault, in the order of steps; a step not found is left out.
// With InOrder, a step out of order ends the search with an error and the
// steps found before it.
func (s StepLogs) Find(steps []LogStep, fault time.Time) ([]Phase, error) {
	from := fault
	if s.Tick > 0 {
		from = fault.Truncate(s.Tick)
	}
	var out []Phase
	var last time.Time
	for _, st := range steps {
	lines:
		for _, line := range s.Logs[st.Log] {
			t, ok := s.Stamp(line)
			if !ok || t.Before(from) {
				continue
			}
			for _, m := range st.Match {
				if !strings.Contains(line, m) {
					continue lines
				}
			}
			if s.InOrder && t.Before(last) {
				return out, fmt.Errorf("%s at %v came before the step ahead of it", st.Name, t.Sub(fault))
			}
			last = t
			out = append(out, Phase{Name: st.Name, At: max(t.Sub(fault), 0)})
			break
		}
	}
	return out, nil
}

// ReadLines returns the lines of the file at path (a daemon's log).
func ReadLines(path string) ([]string, error) {
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
