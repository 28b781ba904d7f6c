package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources/node"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// pairLab is a real two-node cluster in this process: nodes a and b
// (resources/node, as mirrord --config runs them) over loopback
// (127.0.0.1 and 127.0.0.2), two tgtd arrays with the volume on them,
// fenced with persistent reservations, served on a unix socket, and an
// exec resource that marks a file per node. Each node serves its control
// socket like mirrord, so mirrorctl is tested against the real answers.
// The app's stop fails while its mark file's "-stuck" sibling exists.
type pairLab struct {
	t      *testing.T
	dir    string
	ctl    map[string]string // control address per node
	marks  map[string]string // the app resource's file per node
	legs   [2]string         // the arrays' LUN URLs
	cancel map[string]context.CancelFunc
	done   map[string]chan error
}

// newPairLab starts the arrays, creates the volume on them with
// mirrorctl create, and starts both nodes; a is preferred.
func newPairLab(t *testing.T) *pairLab { return newPairLabWith(t, nil) }

// newPairLabWith is newPairLab calling beforeStart (if not nil) with the
// arrays once the volume is made, just before the nodes start.
func newPairLabWith(t *testing.T, beforeStart func(a, b *iscsitarget.Array)) *pairLab {
	if err := iscsitarget.TgtdAvailable(); err != nil {
		t.Fatalf("the pair lab needs tgtd: %v", err)
	}
	dir, err := os.MkdirTemp("", "ctlpair") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	arrA := iscsitarget.StartArray(t, dir, "ctl-a", 16<<20)
	arrB := iscsitarget.StartArray(t, dir, "ctl-b", 16<<20)
	if out, err := run(t, "create", arrA.URL, arrB.URL); err != nil {
		t.Fatalf("mirrorctl create: %v\n%s", err, out)
	}
	key := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(key, []byte("a-test-cluster-key-of-enough-bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if beforeStart != nil {
		beforeStart(arrA, arrB)
	}
	hbPort, svcPort := freeUDPPort(t), freeTCPPort(t)
	l := &pairLab{t: t, dir: dir, ctl: map[string]string{}, marks: map[string]string{},
		cancel: map[string]context.CancelFunc{}, done: map[string]chan error{}, legs: [2]string{arrA.URL, arrB.URL}}
	for _, id := range []string{"a", "b"} {
		l.ctl[id] = "unix:" + filepath.Join(dir, id+".sock")
		l.marks[id] = filepath.Join(dir, id+"-app")
		file := filepath.Join(dir, id+".yaml")
		cfg := fmt.Sprintf(`
cluster: {name: ctltest, key_file: %[1]s, preferred: a, port: %[2]d, state_dir: %[3]s/state-%[4]s}
timing: {keepalive: 50ms, warn: 250ms, dead: 500ms, initdead: 2s}
nodes:
  - id: a
    links: [{medium: nic1, address: 127.0.0.1}]
  - id: b
    links: [{medium: nic1, address: 127.0.0.2}]
iscsi: {initiator_name: "iqn.2026-01.org.hamirror.test:ctl-%[4]s"}
volume:
  legs: [%[5]s, %[6]s]
  listen: [unix:%[3]s/%[4]s-nbd.sock]
  link: %[3]s/%[4]s-volume
  io_timeout: 2s
  mmp_interval: 200ms
group: {migration_threshold: 3, failure_timeout: 10m}
resources:
  - name: app
    type: exec
    start: touch %[7]s
    stop: test ! -e %[7]s-stuck && rm -f %[7]s
    monitor: test -e %[7]s || exit 7
    monitor_interval: 200ms
services: {port: %[8]d}
control: %[9]s
`, key, hbPort, dir, id, arrA.URL, arrB.URL, l.marks[id], svcPort, l.ctl[id])
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, "config", "check", file, "--node", id); err != nil {
			t.Fatalf("config check of the lab's file: %v\n%s", err, out)
		}
		l.start(id, file)
	}
	t.Cleanup(l.stop)
	return l
}

// start runs node id from file and serves its control socket.
func (l *pairLab) start(id, file string) {
	cfg, err := node.LoadConfig(file, heartbeat.NodeID(id))
	if err != nil {
		l.t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(l.dir, id+".log"))
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		logFile.Close()
		if l.t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				l.t.Logf("node %s log (tail):\n%s", id, tail(string(b), 6000))
			}
		}
	})
	log := slog.New(slog.NewTextHandler(logFile, nil))
	n, err := node.New(cfg, node.Options{Logger: log})
	if err != nil {
		l.t.Fatal(err)
	}
	srv, err := control.Listen(cfg.Control)
	if err != nil {
		l.t.Fatal(err)
	}
	for op, h := range n.Handlers() {
		srv.Handle(op, control.HandlerFunc(h))
	}
	go srv.Serve()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := n.Run(ctx)
		srv.Close()
		done <- err
	}()
	l.cancel[id], l.done[id] = cancel, done
}

// stop shuts both nodes down (the group is stopped or handed over).
func (l *pairLab) stop() {
	for id, cancel := range l.cancel {
		cancel()
		select {
		case err := <-l.done[id]:
			if err != nil {
				l.t.Errorf("node %s: %v", id, err)
			}
		case <-time.After(60 * time.Second):
			l.t.Errorf("node %s did not stop", id)
		}
	}
}

// ctlOn runs mirrorctl against node id's control socket.
func (l *pairLab) ctlOn(id string, args ...string) (string, error) {
	return run(l.t, append([]string{"--control", l.ctl[id]}, args...)...)
}

// status is node id's status answer.
func (l *pairLab) status(id string) (node.Status, json.RawMessage) {
	l.t.Helper()
	var raw json.RawMessage
	if err := control.Call(l.ctl[id], "status", nil, &raw); err != nil {
		l.t.Fatalf("status of %s: %v", id, err)
	}
	var st node.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		l.t.Fatalf("status of %s: %v\n%s", id, err, raw)
	}
	return st, raw
}

// waitFor polls node id's status until ok, for at most 60 s.
func (l *pairLab) waitFor(id, what string, ok func(node.Status) bool) (node.Status, json.RawMessage) {
	l.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, raw := l.status(id)
		if ok(st) {
			return st, raw
		}
		if time.Now().After(deadline) {
			out, _ := l.ctlOn(id, "status")
			l.t.Fatalf("%s: not %s within 60s:\n%s", id, what, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runsHere: the group runs on the node and its volume is clean.
func runsHere(st node.Status) bool {
	return st.Group.State.String() == "running" && st.Volume != nil && st.Volume.State == "clean"
}

func freeUDPPort(t *testing.T) int {
	for range 20 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if c2, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.2:%d", port)); err == nil {
			c2.Close()
			return port
		}
	}
	t.Fatal("no free UDP port on 127.0.0.1 and 127.0.0.2")
	return 0
}

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
