package hademo

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

func TestBreakdownShowsEveryStepInOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	o := halab.Outage{From: t0, To: t0.Add(3200 * time.Millisecond), Duration: 3200 * time.Millisecond,
		FaultToService: 3100 * time.Millisecond, Failures: 40}
	phases := []halab.Phase{{Name: "detect", At: 2 * time.Second}, {Name: "fence", At: 2500 * time.Millisecond},
		{Name: "assemble", At: 2600 * time.Millisecond}, {Name: "mount", At: 2650 * time.Millisecond},
		{Name: "VIP", At: 2660 * time.Millisecond}, {Name: "database ready", At: 3050 * time.Millisecond}}
	got := strings.Join(breakdown(o, phases, "n1", "n2"), "\n")
	for _, want := range []string{
		"client-visible outage: 3.20 s (no commit from 03:04:05.000 to 03:04:08.200; 40 failed attempts)",
		"takeover by n2, counted from the power cut of n1:",
		"detect      2.00 s  +2.00 s  ============        ",
		"n2 declares n1 dead",
		"fence       2.50 s  +0.50 s",
		"n2 fences n1",
		"vip         2.66 s  +0.01 s",
		"virtual IP " + halab.VIP + " up on n2",
		"database    3.05 s  +0.39 s",
		"client      3.10 s  +0.05 s  ====================  first commit",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("breakdown lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "%!") || strings.Contains(got, "{") {
		t.Errorf("unformatted text in the breakdown:\n%s", got)
	}

	// The client served before mirrord logged the database's start.
	o.FaultToService = 3 * time.Second
	got = strings.Join(breakdown(o, phases, "n1", "n2"), "\n")
	if i, j := strings.Index(got, "client "), strings.Index(got, "database "); i < 0 || j < 0 || i > j {
		t.Errorf("the client's first commit is not listed before the database's later start:\n%s", got)
	}
	if strings.Contains(got, "+-") {
		t.Errorf("a negative step in the breakdown:\n%s", got)
	}
}

func TestProgressWithoutTerminalPrintsQuarters(t *testing.T) {
	var b bytes.Buffer
	p := &printer{w: &b, start: time.Now(), lastQ: -1}
	for done := int64(0); done <= 100<<20; done += 5 << 20 {
		p.Progress("resync", done, 100<<20)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], "0.0%") || !strings.Contains(lines[4], "100.0%  100.0 MiB of 100.0 MiB") {
		t.Errorf("progress lines:\n%s", b.String())
	}
}

func TestFuseDevices(t *testing.T) {
	mi := `22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 22 0:45 / /run/hamirror/fuse rw,nosuid,nodev,relatime - fuse nbdfuse rw,user_id=0,group_id=0
41 22 0:46 / /mnt/x rw - fuse.sshfs host: rw
42 22 0:47 / /run rw - tmpfs tmpfs rw
garbage`
	if got := strings.Join(fuseDevices(mi), ","); got != "0:45,0:46" {
		t.Errorf("fuse devices %q, want 0:45,0:46", got)
	}
}
