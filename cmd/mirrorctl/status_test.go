package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/mirror"
)

// fakeDaemon answers mirrord's control ops from a script: the commands are
// tested against the real control protocol without a volume (the
// end-to-end tests in cmd/mirrord run the real daemon).
type fakeDaemon struct {
	addr  string
	mu    sync.Mutex
	calls []string
	args  []json.RawMessage
	// statuses are returned by successive "status" calls (the last repeats).
	statuses []volumeStatus
	opErr    error
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeDaemon{addr: "unix:" + filepath.Join(dir, "c.sock")}
	srv, err := control.Listen(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	srv.Handle("status", func(json.RawMessage) (any, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls = append(f.calls, "status")
		st := f.statuses[0]
		if len(f.statuses) > 1 {
			f.statuses = f.statuses[1:]
		}
		return st, nil
	})
	for _, op := range []string{"leg-fail", "leg-add", "resync", "verify"} {
		srv.Handle(op, func(raw json.RawMessage) (any, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.calls = append(f.calls, op)
			f.args = append(f.args, raw)
			if f.opErr != nil {
				return nil, f.opErr
			}
			return f.statuses[0], nil
		})
	}
	return f
}

func st(state string, legs ...string) volumeStatus {
	var s volumeStatus
	s.State, s.SizeBytes, s.ChunkBytes, s.VolumeUUID = state, 1<<30, 1<<20, "3b1c-uuid"
	for i, l := range legs {
		s.Legs[i] = mirror.LegStatus{Slot: i, Path: "/dev/leg" + string(rune('a'+i)), State: l}
	}
	return s
}

func TestStatusHumanFormAndExitCodes(t *testing.T) {
	cases := []struct {
		name   string
		status volumeStatus
		want   []string
		exit   error
	}{
		{"clean", st("clean", "in_sync", "in_sync"), []string{"state:clean", "size:1.0GiB", "leg0 /dev/lega disk:in_sync", "SAFE"}, nil},
		{"degraded", func() volumeStatus {
			s := st("degraded", "in_sync", "failed")
			s.Legs[1].Error = "write timed out"
			return s
		}(), []string{"disk:failed", `error:"write timed out"`, "ONE COPY ONLY", "mirrorctl leg add 1"}, exitCode(2)},
		{"resyncing", func() volumeStatus {
			s := st("resyncing", "in_sync", "rebuilding")
			s.Legs[1].OutOfSyncBytes = 512 << 20
			s.Resync = mirror.ResyncStatus{Running: true, DoneBytes: 256 << 20, TotalBytes: 512 << 20, BytesPerSecond: 100 << 20, ETASeconds: 3}
			return s
		}(), []string{"out-of-sync:512.0MiB", "resync: 256.0MiB of 512.0MiB (50%), 100.0MiB/s, 3s left", "until the resync completes"}, exitCode(2)},
		{"split brain", func() volumeStatus {
			s := st("split-brain", "out_of_sync", "out_of_sync")
			s.VolumeUUID = ""
			s.Error = "split brain: ... --keep-leg 0 or --keep-leg 1"
			return s
		}(), []string{"(not assembled)", "state:split-brain", "NOT SERVED: split brain", "--keep-leg"}, exitCode(2)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeDaemon(t)
			f.statuses = []volumeStatus{c.status}
			out, err := run(t, "--control", f.addr, "status")
			if !errors.Is(err, c.exit) && err != c.exit {
				t.Fatalf("exit %v, want %v\n%s", err, c.exit, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("status output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestStatusJSONIsTheContract(t *testing.T) {
	f := newFakeDaemon(t)
	s := st("degraded", "in_sync", "failed")
	s.NBD.Listen = []string{"unix:/run/x.sock"}
	f.statuses = []volumeStatus{s}
	out, _ := run(t, "--control", f.addr, "status", "--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"state", "size_bytes", "legs", "resync", "verify", "nbd"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status --json lacks %q", k)
		}
	}
	leg := m["legs"].([]any)[1].(map[string]any)
	for _, k := range []string{"slot", "path", "state", "out_of_sync_bytes"} {
		if _, ok := leg[k]; !ok {
			t.Errorf("leg lacks %q", k)
		}
	}
	if leg["state"] != "failed" || m["state"] != "degraded" {
		t.Errorf("json %v", m)
	}
}

func TestLegCommandsSendTheSlot(t *testing.T) {
	f := newFakeDaemon(t)
	f.statuses = []volumeStatus{st("degraded", "in_sync", "failed")}
	if out, err := run(t, "--control", f.addr, "leg", "fail", "1"); err != nil || !strings.Contains(out, "leg 1 failed") {
		t.Fatalf("leg fail: %v\n%s", err, out)
	}
	if out, err := run(t, "--control", f.addr, "leg", "add", "1", "--path", "/dev/new"); err != nil || !strings.Contains(out, "resync started") {
		t.Fatalf("leg add: %v\n%s", err, out)
	}
	if f.calls[0] != "leg-fail" || string(f.args[0]) != `{"slot":1}` || f.calls[1] != "leg-add" || string(f.args[1]) != `{"slot":1,"path":"/dev/new"}` {
		t.Fatalf("calls %v args %s", f.calls, f.args)
	}
	for _, bad := range []string{"2", "-1", "x"} {
		if _, err := run(t, "--control", f.addr, "leg", "fail", bad); err == nil {
			t.Errorf("leg fail %s accepted", bad)
		}
	}
	f.opErr = errors.New("leg 0 is the last working leg")
	if _, err := run(t, "--control", f.addr, "leg", "fail", "0"); err == nil || !strings.Contains(err.Error(), "last working leg") {
		t.Fatalf("daemon's refusal not passed on: %v", err)
	}
}

func TestResyncWaitFollowsToClean(t *testing.T) {
	f := newFakeDaemon(t)
	r1 := st("resyncing", "in_sync", "rebuilding")
	r1.Resync = mirror.ResyncStatus{Running: true, DoneBytes: 1 << 20, TotalBytes: 4 << 20}
	r2 := r1
	r2.Resync.DoneBytes = 3 << 20
	f.statuses = []volumeStatus{r1, r2, r2, st("clean", "in_sync", "in_sync")}
	out, err := run(t, "--control", f.addr, "resync", "--wait")
	if err != nil || !strings.Contains(out, "in sync") {
		t.Fatalf("resync --wait: %v\n%s", err, out)
	}
	// A leg that fails during the resync ends the wait with an error.
	f2 := newFakeDaemon(t)
	d := st("degraded", "in_sync", "failed")
	f2.statuses = []volumeStatus{r1, d}
	if out, err := run(t, "--control", f2.addr, "resync", "--wait"); err == nil || !strings.Contains(out, "ONE COPY ONLY") {
		t.Fatalf("resync --wait with a failed leg: %v\n%s", err, out)
	}
}

func TestVerifyWaitExitCodes(t *testing.T) {
	f := newFakeDaemon(t)
	running := st("clean", "in_sync", "in_sync")
	running.Verify = mirror.VerifyStatus{Running: true, DoneBytes: 1 << 29, TotalBytes: 1 << 30}
	done := st("clean", "in_sync", "in_sync")
	done.Verify = mirror.VerifyStatus{DoneBytes: 1 << 30, TotalBytes: 1 << 30}
	f.statuses = []volumeStatus{running, done}
	out, err := run(t, "--control", f.addr, "verify", "--wait")
	if err != nil || !strings.Contains(out, "identical") {
		t.Fatalf("verify --wait: %v\n%s", err, out)
	}
	bad := done
	bad.Verify.Mismatches, bad.Verify.MismatchOffsets = 2, []int64{0, 1 << 20}
	f2 := newFakeDaemon(t)
	f2.statuses = []volumeStatus{bad}
	out, err = run(t, "--control", f2.addr, "verify", "--wait", "--repair")
	if err != exitCode(3) || !strings.Contains(out, "2 mismatching chunks") {
		t.Fatalf("verify with mismatches: %v\n%s", err, out)
	}
	if string(f2.args[0]) != `{"repair":true}` {
		t.Fatalf("verify args %s", f2.args[0])
	}
}

func TestStatusWithoutDaemon(t *testing.T) {
	_, err := run(t, "--control", "unix:/nonexistent/hamirror.sock", "status")
	if err == nil || !strings.Contains(err.Error(), "is it running") {
		t.Fatalf("no daemon: %v", err)
	}
}

func TestHumanSizes(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1.0KiB", 1536 << 10: "1.5MiB", 3 << 40: "3.0TiB"} {
		if got := human(n); got != want {
			t.Errorf("human(%d) = %q, want %q", n, got, want)
		}
	}
}
