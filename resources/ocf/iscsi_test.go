package ocf

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// The volume over two tgtd arrays through hamirror's own initiator. An
// array that dies leaves the resource running (degraded: monitor 0). A
// persistent reservation taken by another initiator whose sessions are not
// ours -- what fence_scsi's unfencing does through the kernel's sessions --
// fences mirrord's unregistered sessions: monitor 1 with the reason, and
// stop still succeeds. docs/PACEMAKER.md explains why fence_scsi needs
// kernel block-device legs.
func TestISCSILegsDegradedThenFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("tgtd test: not in -short")
	}
	r := newRigNoLegs(t, modes(t)[0])
	arrays := [2]*iscsitarget.Array{
		iscsitarget.StartArray(t, r.dir, "array-a", 32<<20),
		iscsitarget.StartArray(t, r.dir, "array-b", 32<<20),
	}
	r.legs = [2]string{arrays[0].URL, arrays[1].URL}
	r.create()
	r.param("legs", r.legs[0]+" "+r.legs[1])
	r.param("io_timeout", "2s")

	r.expect("monitor", ocfNotRunning, "OCF_RESKEY_CRM_meta_interval=0")
	r.expect("start", ocfSuccess)
	r.expect("monitor", ocfSuccess)

	if err := arrays[1].Tgtd.Kill(); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, "degraded", 30*time.Second)
	r.expect("monitor", ocfSuccess)

	// Another node's initiator registers and reserves Write Exclusive -
	// Registrants Only on the surviving array.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	other, err := iscsi.OpenLeg(ctx, arrays[0].URL, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:pacemaker-node2"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	const key = 0x4e4f444532 // "NODE2"
	if err := other.RegisterAndIgnore(key); err != nil {
		t.Fatal(err)
	}
	if err := other.Reserve(key, iscsi.WriteExclusiveRegistrantsOnly); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := r.run("monitor")
		if res.rc == ocfErrGeneric {
			// The engine reports "fenced" when a data or metadata write
			// meets the conflict, and "failed" when the multi-mount
			// protection's writes do first (no I/O here): either way the
			// volume stopped serving and the monitor says why.
			why := res.reason()
			if !strings.HasPrefix(why, "volume fenced") && !strings.HasPrefix(why, "volume failed") || !strings.Contains(r.logTail(), "RESERVATION CONFLICT") {
				t.Fatalf("monitor of a fenced volume: reason %q", why)
			}
			t.Logf("monitor: %s", why)
			break
		}
		if res.rc != ocfSuccess || time.Now().After(deadline) {
			t.Fatalf("monitor after the reservation: exit %d (%s), state %q", res.rc, res.reason(), r.state())
		}
		time.Sleep(200 * time.Millisecond)
	}
	pid := r.pid()
	r.expect("stop", ocfSuccess)
	if alive(pid) {
		t.Fatal("mirrord runs after stop")
	}
	r.expect("monitor", ocfNotRunning)
	if err := other.Clear(key); err != nil {
		t.Logf("clearing the reservation: %v", err)
	}
}

func waitState(t *testing.T, r *rig, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := r.state()
		if st == want {
			return
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command(r.mirrorctl, "--control", "unix:"+r.ctl, "status").CombinedOutput()
			t.Fatalf("state %q after %v, want %q\n%s", st, within, want, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
