package halab

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// stampMS reads lines "MS text": a stamp in whole milliseconds from base.
func stampMS(base time.Time) func(string) (time.Time, bool) {
	return func(line string) (time.Time, bool) {
		var ms int
		if _, err := fmt.Sscanf(line, "%d ", &ms); err != nil {
			return time.Time{}, false
		}
		return base.Add(time.Duration(ms) * time.Millisecond), true
	}
}

func phaseList(ps []Phase) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%s %v", p.Name, p.At))
	}
	return strings.Join(parts, ", ")
}

// A breakdown takes each step's first line at or after the fault from
// that step's log; with a tick, the fault's own tick counts (at 0); in
// order, a step stamped before the one ahead of it is an error.
func TestStepLogsFind(t *testing.T) {
	base := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	fault := base.Add(1000*time.Millisecond + 400*time.Microsecond)
	logs := map[string][]string{
		"a": {"900 start x", "garbage", "1000 start x", "1500 start x", "1600 start y"},
		"b": {"1200 fenced", "1300 fenced"},
	}
	steps := []LogStep{
		{Name: "x", Log: "a", Match: []string{"start", "x"}},
		{Name: "fence", Log: "b", Match: []string{"fenced"}},
		{Name: "never", Log: "b", Match: []string{"nothing like it"}},
		{Name: "y", Log: "a", Match: []string{"start y"}},
	}
	exact := StepLogs{Logs: logs, Stamp: stampMS(base)}
	got, err := exact.Find(steps, fault)
	if want := "x 499.6ms, fence 199.6ms, y 599.6ms"; err != nil || phaseList(got) != want {
		t.Errorf("exact stamps: %s (%v), want %s", phaseList(got), err, want)
	}
	ticked := StepLogs{Logs: logs, Stamp: stampMS(base), Tick: time.Millisecond}
	got, err = ticked.Find(steps, fault)
	if want := "x 0s, fence 199.6ms, y 599.6ms"; err != nil || phaseList(got) != want {
		t.Errorf("millisecond stamps: %s (%v), want %s", phaseList(got), err, want)
	}
	ordered := StepLogs{Logs: logs, Stamp: stampMS(base), InOrder: true}
	got, err = ordered.Find(steps, fault)
	if err == nil || phaseList(got) != "x 499.6ms" {
		t.Errorf("a fence stamped before the step ahead of it: %s (%v), want x alone and an error", phaseList(got), err)
	}
	if got, err := ordered.Find(steps[2:], fault); err != nil || phaseList(got) != "y 599.6ms" {
		t.Errorf("in order: %s (%v)", phaseList(got), err)
	}
}
