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

// The database's steps come from its server log: each the first line
// after the step ahead of it and after the fault, also the first line
// after the hole of NUL bytes the killed node's unwritten lines left;
// with nothing to redo, one line ends both redo steps.
func TestPGLogPhases(t *testing.T) {
	fault := time.Date(2026, 12, 3, 12, 0, 2, 0, time.UTC)
	log := func(lines ...string) string {
		var parts []string
		for _, p := range pgLogPhases(lines, fault) {
			parts = append(parts, p.Name+" "+p.At.String())
		}
		return strings.Join(parts, ", ")
	}
	got := log(
		"2026-12-03 12:00:01.000 UTC [50] LOG:  checkpoint complete: before the fault",
		"2026-12-03 12:00:01.500 UTC [50] LOG:  duration: the dead node's last line, half written",
		"\x00\x00\x00\x002026-12-03 12:00:02.200 UTC [93] LOG:  starting PostgreSQL 15.14 (Debian 15.14-0+deb12u1) on x86_64-pc-linux-gnu",
		"2026-12-03 12:00:02.210 UTC [95] LOG:  database system was not properly shut down; automatic recovery in progress",
		"a line without a time",
		"2026-12-03 12:00:02.300 UTC [95] LOG:  redo starts at 0/1A2B3C8",
		"2026-12-03 12:00:02.350 UTC [95] LOG:  redo done at 0/1A2C000 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.05 s",
		"2026-12-03 12:00:02.351 UTC [94] LOG:  checkpoint starting: end-of-recovery immediate wait",
		"2026-12-03 12:00:02.450 UTC [94] LOG:  checkpoint complete: wrote 3 buffers (18.8%); write=0.001 s, sync=0.090 s, total=0.099 s",
		"2026-12-03 12:00:02.460 UTC [93] LOG:  database system is ready to accept connections",
		"2026-12-03 12:00:09.000 UTC [93] LOG:  database system is ready to accept connections",
	)
	if want := "db launched 200ms, redo starts 300ms, redo done 350ms, recovery checkpoint 450ms, db accepts 460ms"; got != want {
		t.Fatalf("after a crash: %s, want %s", got, want)
	}
	got = log(
		"2026-12-03 12:00:02.200 UTC [93] LOG:  starting PostgreSQL 15.14",
		"2026-12-03 12:00:02.250 UTC [95] LOG:  redo is not required",
		"2026-12-03 12:00:02.300 UTC [94] LOG:  checkpoint complete: wrote 0 buffers",
		"2026-12-03 12:00:02.310 UTC [93] LOG:  database system is ready to accept connections",
	)
	if want := "db launched 200ms, redo starts 250ms, redo done 250ms, recovery checkpoint 300ms, db accepts 310ms"; got != want {
		t.Fatalf("with nothing to redo: %s, want %s", got, want)
	}
}
