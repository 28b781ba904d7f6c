package hamirror

import (
	"strings"
	"testing"
	"time"
)

func logLine(at time.Time, rest string) string {
	return "time=" + at.Format(time.RFC3339Nano) + " level=INFO " + rest
}

// The breakdown takes each step's first line after the fault, from the
// survivor's log or (a hand-over) the victim's, and refuses steps out of
// order.
func TestFindPhases(t *testing.T) {
	fault := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return fault.Add(time.Duration(ms) * time.Millisecond) }
	survivor := []string{
		logLine(at(-500), `msg=done node=n2 op="start volume" after=1ms`), // before the fault: not this takeover
		"garbage without a time",
		logLine(at(100), `msg="node n1: alive -> suspect" node=n2`),
		logLine(at(2000), `msg="fencing n1 before starting the group here" node=n2`),
		logLine(at(2010), `msg=done node=n2 op="fence n1" after=8ms`),
		logLine(at(2060), `msg=done node=n2 op="start volume" after=50ms`),
		logLine(at(2100), `msg=done node=n2 op="start fs" after=40ms`),
		logLine(at(2101), `msg=done node=n2 op="start vip" after=1ms`),
		logLine(at(2500), `msg=done node=n2 op="start db" after=399ms`),
	}
	got, err := findPhases(map[string][]string{survivorLog: survivor}, takeoverPhases("n1"), fault)
	if err != nil {
		t.Fatal(err)
	}
	want := "detect 2s, fence 2.01s, assemble 2.06s, mount 2.1s, VIP 2.101s, database ready 2.5s"
	var parts []string
	for _, p := range got {
		parts = append(parts, p.Name+" "+p.At.String())
	}
	if s := strings.Join(parts, ", "); s != want {
		t.Fatalf("takeover: %s, want %s", s, want)
	}

	victim := []string{
		logLine(at(3000), `msg="heartbeat n1: ALARM: n2 reaches 1 public ping targets, this node 0: handing over the active role"`),
		logLine(at(3400), `msg=done node=n1 op="stop fence" after=2ms`),
	}
	survivor = []string{logLine(at(3500), `msg=done node=n2 op="start volume" after=50ms`)}
	got, err = findPhases(map[string][]string{survivorLog: survivor, victimLog: victim}, handoverPhases(), fault)
	if err != nil || len(got) != 3 || got[0].Name != "detect" || got[1].Name != "stopped" || got[2].At != 3500*time.Millisecond {
		t.Fatalf("hand-over: %v (%v)", got, err)
	}

	survivor = []string{
		logLine(at(2060), `msg=done node=n2 op="start volume" after=50ms`),
		logLine(at(2100), `msg=done node=n2 op="fence n1" after=8ms`),
	}
	if _, err := findPhases(map[string][]string{survivorLog: survivor}, takeoverPhases("n1"), fault); err == nil {
		t.Fatal("a volume started before the fence was taken for a takeover in order")
	}
}
