package ocf

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// validate-all refuses each bad configuration with the code Pacemaker
// expects (6: wrong on every node, 5: not installed here) and a reason
// that names the parameter.
func TestValidateAll(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(string(m), func(t *testing.T) {
			r := newRigNoLegs(t, m)
			a, b := filepath.Join(r.dir, "a.img"), filepath.Join(r.dir, "b.img")
			good := map[string]string{"legs": a + " " + b}
			cases := []struct {
				name   string
				params map[string]string
				rc     int
				reason string
			}{
				{"good", nil, ocfSuccess, ""},
				{"no legs", map[string]string{"legs": ""}, ocfErrConfigured, "legs"},
				{"one leg", map[string]string{"legs": a}, ocfErrConfigured, "exactly two"},
				{"three legs", map[string]string{"legs": a + " " + b + " " + a}, ocfErrConfigured, "exactly two"},
				{"same leg twice", map[string]string{"legs": a + " " + a}, ocfErrConfigured, "same leg"},
				{"keep_leg 2", map[string]string{"keep_leg": "2"}, ocfErrConfigured, "keep_leg"},
				{"keep_leg 1", map[string]string{"keep_leg": "1"}, ocfSuccess, ""},
				{"io_timeout", map[string]string{"io_timeout": "five"}, ocfErrConfigured, "io_timeout"},
				{"io_timeout compound", map[string]string{"io_timeout": "1m30s"}, ocfSuccess, ""},
				{"device", map[string]string{"device": "/dev/sda"}, ocfErrConfigured, "/dev/nbdN"},
				{"device nbd", map[string]string{"device": "/dev/nbd12"}, ocfSuccess, ""},
				{"listen", map[string]string{"listen": "/run/x.sock"}, ocfErrConfigured, "listen"},
				{"nothing served", map[string]string{"listen": "none"}, ocfErrConfigured, "nothing to serve"},
				{"device only", map[string]string{"listen": "none", "device": "/dev/nbd0"}, ocfSuccess, ""},
				{"control", map[string]string{"control": "tcp:127.0.0.1:1"}, ocfErrConfigured, "control"},
				{"cluster mode", map[string]string{"options": "--config /etc/hamirror/cluster.yaml"}, ocfErrConfigured, "cluster mode"},
				{"agent's own flag", map[string]string{"options": "--resync-max-rate 10M --leg=/x"}, ocfErrConfigured, "--leg"},
				{"no mirrord", map[string]string{"mirrord": filepath.Join(r.dir, "nope")}, ocfErrInstalled, "nope"},
				{"no mirrorctl", map[string]string{"mirrorctl": "hamirror-no-such-binary"}, ocfErrInstalled, "hamirror-no-such-binary"},
			}
			for _, c := range cases {
				for k, v := range good {
					r.param(k, v)
				}
				saved := map[string]string{}
				for k, v := range c.params {
					saved[k] = r.env["OCF_RESKEY_"+k]
					r.param(k, v)
				}
				res := r.run("validate-all")
				if res.rc != c.rc || !strings.Contains(res.reason(), c.reason) {
					t.Errorf("%s: exit %d reason %q, want %d with %q\n%s", c.name, res.rc, res.reason(), c.rc, c.reason, res.stderr)
				}
				if c.rc != ocfSuccess {
					// start refuses the same way, before touching anything.
					if res := r.run("start"); res.rc != c.rc {
						t.Errorf("%s: start exit %d, want %d", c.name, res.rc, c.rc)
					}
				}
				for k, v := range saved {
					r.param(k, v)
				}
			}
			if _, err := os.Stat(r.log); err == nil {
				t.Errorf("a refused start ran mirrord:\n%s", r.logTail())
			}
		})
	}
}

// The life of a resource as Pacemaker drives it: probe, start, monitor,
// start again, stop, stop again, restart; over real mirrord with file legs,
// served over NBD.
func TestStartMonitorStop(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(string(m), func(t *testing.T) {
			r := newRig(t, m, 32<<20)
			r.expect("monitor", ocfNotRunning, "OCF_RESKEY_CRM_meta_interval=0") // probe
			r.expect("stop", ocfSuccess)                                         // stopping a stopped resource

			r.expect("start", ocfSuccess)
			pid := r.pid()
			if !alive(pid) {
				t.Fatalf("no mirrord after start (pid file says %d)", pid)
			}
			if st := r.state(); st != "clean" {
				t.Fatalf("state after start: %q", st)
			}
			if _, err := exec.LookPath("nbdinfo"); err == nil {
				out, err := exec.Command("nbdinfo", "--size", "nbd+unix:///?socket="+r.sock).CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) == "0" {
					t.Fatalf("nbdinfo on the served volume: %v %s", err, out)
				}
			} else {
				t.Log("LOUD: nbdinfo missing (libnbd-bin): the NBD export is not checked")
			}
			r.expect("monitor", ocfSuccess)
			r.expect("monitor", ocfSuccess, "OCF_RESKEY_CRM_meta_interval=0")

			r.expect("start", ocfSuccess) // starting a started resource
			if r.pid() != pid || !alive(pid) {
				t.Fatalf("a second start replaced mirrord: pid %d, was %d", r.pid(), pid)
			}

			r.expect("stop", ocfSuccess)
			if alive(pid) {
				t.Fatal("mirrord runs after stop")
			}
			if _, err := os.Stat(r.pidfile); err == nil {
				t.Error("pid file left after stop")
			}
			if !strings.Contains(r.logTail(), "volume closed clean") {
				t.Errorf("stop did not close the volume cleanly:\n%s", r.logTail())
			}
			r.expect("monitor", ocfNotRunning)
			r.expect("stop", ocfSuccess)

			// A clean stop released the volume: the next start does not
			// wait for the multi-mount protection.
			r.expect("start", ocfSuccess)
			if strings.Contains(r.logTail(), "waiting") {
				t.Errorf("start after a clean stop waited:\n%s", r.logTail())
			}
			// A failed leg leaves the volume served: still running.
			if out, err := exec.Command(r.mirrorctl, "--control", "unix:"+r.ctl, "leg", "fail", "1").CombinedOutput(); err != nil {
				t.Fatalf("leg fail: %v %s", err, out)
			}
			res := r.expect("monitor", ocfSuccess)
			if st := r.state(); st != "degraded" {
				t.Fatalf("state after leg fail: %q", st)
			}
			if !strings.Contains(res.stderr, "degraded") {
				t.Errorf("monitor of a degraded volume does not warn:\n%s", res.stderr)
			}
			r.expect("stop", ocfSuccess)
		})
	}
}

// A lone leg that does not prove it is the newest copy is not served:
// start fails with the reason (so Pacemaker can try the other node) and
// leaves no mirrord behind; keep_leg, the operator's decision, starts it.
func TestStartRefusesALoneLegNotProvablyNewest(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(string(m), func(t *testing.T) {
			r := newRig(t, m, 32<<20)
			r.param("legs", r.legs[0]+" "+filepath.Join(r.dir, "gone.img"))
			res := r.expect("start", ocfErrGeneric)
			if why := res.reason(); !strings.Contains(why, "not provably newest") || !strings.Contains(why, "keep_leg") {
				t.Fatalf("exit reason %q", why)
			}
			r.expect("monitor", ocfNotRunning)
			if _, err := os.Stat(r.pidfile); err == nil {
				t.Error("pid file left after a refused start")
			}

			r.param("keep_leg", "0")
			res = r.expect("start", ocfSuccess)
			if !strings.Contains(res.stderr, "keep_leg") {
				t.Errorf("a forced start does not warn about keep_leg:\n%s", res.stderr)
			}
			if st := r.state(); st != "degraded" {
				t.Fatalf("state with keep_leg on one leg: %q", st)
			}
			r.expect("monitor", ocfSuccess)
			r.expect("stop", ocfSuccess)
		})
	}
}

// Two legs written separately (each started alone with keep_leg) are a
// split brain: start refuses and says so; keep_leg resolves it.
func TestStartRefusesASplitBrain(t *testing.T) {
	r := newRig(t, modes(t)[0], 32<<20)
	missing := filepath.Join(r.dir, "gone.img")
	r.param("keep_leg", "0")
	r.param("legs", r.legs[0]+" "+missing)
	r.expect("start", ocfSuccess)
	r.expect("stop", ocfSuccess)
	r.param("keep_leg", "1")
	r.param("legs", missing+" "+r.legs[1])
	r.expect("start", ocfSuccess)
	r.expect("stop", ocfSuccess)

	r.param("keep_leg", "")
	r.param("legs", r.legs[0]+" "+r.legs[1])
	res := r.expect("start", ocfErrGeneric)
	if why := res.reason(); !strings.Contains(why, "split brain") || !strings.Contains(why, "keep_leg") {
		t.Fatalf("exit reason %q", why)
	}
	r.expect("monitor", ocfNotRunning)

	r.param("keep_leg", "0")
	r.expect("start", ocfSuccess)
	r.expect("monitor", ocfSuccess)
	r.expect("stop", ocfSuccess)
}

// mirrord killed (a crash): monitor says not running, stop is a no-op, and
// the next start succeeds once the multi-mount protection saw the old
// owner stay silent.
func TestCrashedMirrordIsNotRunningAndRestarts(t *testing.T) {
	r := newRig(t, modes(t)[0], 32<<20)
	r.expect("start", ocfSuccess)
	pid := r.pid()
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid, 10*time.Second)
	r.expect("monitor", ocfNotRunning)
	r.expect("stop", ocfSuccess)
	r.expect("start", ocfSuccess)
	if !alive(r.pid()) || r.pid() == pid {
		t.Fatalf("no new mirrord after the restart (pid %d)", r.pid())
	}
	r.expect("monitor", ocfSuccess)
	r.expect("stop", ocfSuccess)
}

// A hung mirrord (SIGSTOP: it cannot answer nor close) fails the monitor;
// stop kills it shortly before the stop timeout and still succeeds (the
// process is gone), and says that the next start waits for the MMP.
func TestHungMirrordFailsMonitorAndStopKillsIt(t *testing.T) {
	r := newRig(t, modes(t)[0], 32<<20)
	r.expect("start", ocfSuccess)
	pid := r.pid()
	syscall.Kill(pid, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	res := r.expect("monitor", ocfErrGeneric, "OCF_RESKEY_CRM_meta_timeout=4000")
	if !strings.Contains(res.reason(), "did not answer") {
		t.Fatalf("exit reason %q", res.reason())
	}
	res = r.expect("stop", ocfSuccess, "OCF_RESKEY_CRM_meta_timeout=8000")
	if !strings.Contains(res.stderr, "killing") || !strings.Contains(res.stderr, "multi-mount protection") {
		t.Errorf("stop does not say it killed mirrord:\n%s", res.stderr)
	}
	waitGone(t, pid, 5*time.Second)
	r.expect("monitor", ocfNotRunning)
	r.expect("start", ocfSuccess)
	r.expect("stop", ocfSuccess)
}

// A mirrord the agent did not start, on the resource's control socket: the
// probe does not call the resource stopped (Pacemaker would start it
// elsewhere), and stop refuses (it cannot stop what it does not own).
func TestMirrordNotStartedByTheAgent(t *testing.T) {
	r := newRig(t, modes(t)[0], 32<<20)
	os.MkdirAll(filepath.Dir(r.ctl), 0o755)
	cmd := exec.Command(r.mirrord, "volume", "--leg", r.legs[0], "--leg", r.legs[1], "--listen", "unix:"+r.sock,
		"--control", "unix:"+r.ctl, "--lock-dir", filepath.Join(r.dir, "locks"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	deadline := time.Now().Add(20 * time.Second)
	for r.state() != "clean" {
		if time.Now().After(deadline) {
			t.Fatal("hand-started mirrord does not serve")
		}
		time.Sleep(50 * time.Millisecond)
	}
	res := r.expect("monitor", ocfErrGeneric, "OCF_RESKEY_CRM_meta_interval=0")
	if !strings.Contains(res.reason(), "did not start") {
		t.Errorf("probe reason %q", res.reason())
	}
	r.expect("stop", ocfErrGeneric)
	r.expect("start", ocfErrGeneric)
	cmd.Process.Signal(syscall.SIGTERM)
	<-done
	r.expect("monitor", ocfNotRunning)
}
