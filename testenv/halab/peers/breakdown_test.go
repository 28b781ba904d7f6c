package peers

import (
	"testing"
	"time"
)

// Lines from a takeover by n2 in the lab (token 1000), fault at 11:46:02.646.
var sampleLogs = map[string][]string{
	"corosync": {
		"Dec 03 11:45:10.001 [14] n2 corosync notice  [TOTEM ] A processor failed, forming new configuration: token timed out (1000ms), waiting 1200ms for consensus.",
		"Dec 03 11:46:03.156 [14] n2 corosync info    [KNET  ] link: host: 1 link: 0 is down",
		"Dec 03 11:46:03.608 [14] n2 corosync notice  [TOTEM ] A processor failed, forming new configuration: token timed out (1000ms), waiting 1200ms for consensus.",
		"Dec 03 11:46:04.812 [14] n2 corosync notice  [TOTEM ] A new membership (2.d) was formed. Members left: 1",
	},
	"pacemaker": {
		"Dec 03 11:46:05.020 n2 pacemaker-controld  [34] (handle_fence_notification) \tnotice: Peer n1 was terminated (off) by n2 on behalf of pacemaker-controld.34@n2: OK | event=309ced01",
		"Dec 03 11:46:05.056 n2 pacemaker-controld  [34] (log_executor_event) \tnotice: Result of start operation for fence on n2: ok | CIB update 46",
		"Dec 03 11:46:05.608 n2 pacemaker-controld  [34] (log_executor_event) \tnotice: Result of start operation for fs on n2: ok | CIB update 50",
		"Dec 03 11:46:06.600 n2 pacemaker-controld  [34] (log_executor_event) \tnotice: Result of start operation for vip on n2: ok | CIB update 54",
		"garbage line",
		"Dec 03 11:46:09.196 n2 pacemaker-controld  [34] (log_executor_event) \tnotice: Result of start operation for db on n2: ok | CIB update 58",
	},
}

func TestFindPhasesReadsTheTakeoverFromTheSurvivorsLogs(t *testing.T) {
	fault := time.Date(2026, 12, 3, 11, 46, 2, 646266060, time.Local)
	got := findPhases(sampleLogs, pacemakerPhases("n2", "n1"), fault)
	want := []struct {
		name string
		ms   int
	}{{"token lost", 961}, {"membership without victim", 2165}, {"victim fenced", 2373},
		{"fs started", 2961}, {"vip started", 3953}, {"db started", 6549}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %d phases", got, len(want))
	}
	for i, w := range want {
		if got[i].Name != w.name || got[i].At.Milliseconds() != int64(w.ms) {
			t.Errorf("phase %d: got %s at %v, want %s at %d ms", i, got[i].Name, got[i].At, w.name, w.ms)
		}
	}
}

func TestFindPhasesIgnoresStepsOfAnotherNodeOrBeforeTheFault(t *testing.T) {
	fault := time.Date(2026, 12, 3, 11, 46, 2, 0, time.Local)
	// As if n1 had survived: none of n2's starts nor n1's fencing match.
	got := findPhases(sampleLogs, pacemakerPhases("n1", "n2"), fault)
	for _, p := range got {
		if p.Name != "token lost" && p.Name != "membership without victim" {
			t.Errorf("phase %s found for the wrong node", p.Name)
		}
	}
	late := time.Date(2026, 12, 3, 11, 47, 0, 0, time.Local)
	if got := findPhases(sampleLogs, pacemakerPhases("n2", "n1"), late); len(got) != 0 {
		t.Errorf("phases before the fault counted: %v", got)
	}
}
