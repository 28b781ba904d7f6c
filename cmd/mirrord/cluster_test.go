package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/resources/node"
)

func writeCluster(t *testing.T, dir string, keyMode os.FileMode, port int) string {
	t.Helper()
	key := filepath.Join(dir, "cluster.key")
	os.WriteFile(key, []byte("a-test-cluster-key-of-enough-bytes"), keyMode)
	os.Chmod(key, keyMode)
	slots := filepath.Join(dir, "slots")
	os.WriteFile(slots, make([]byte, 8*1024), 0o600)
	path := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf(`
cluster:
  name: cmdtest
  key_file: %s
  preferred: a
  port: %d
  state_dir: %s
timing: {keepalive: 50ms, warn: 250ms, dead: 500ms, initdead: 2s}
nodes:
  - id: a
    links: [{medium: nic1, address: 127.0.0.1}]
  - id: b
    links: [{medium: nic1, address: 127.0.0.2}]
disks:
  - {name: disk-a, path: %s, slot_size: 1024, slots: 8}
  - {name: disk-b, slot_size: 1024, slots: 8}   # neither path nor leg: left out, with a warning
`, key, port, filepath.Join(dir, "state"), slots)), 0o644)
	return path
}

// TestClusterModeServesStatus runs two mirrords in cluster mode over
// loopback and asks each for "status" and "nodes" on its control socket.
func TestClusterModeServesStatus(t *testing.T) {
	dir := t.TempDir()
	cfg := writeCluster(t, dir, 0o600, 25405)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	socks := map[string]string{}
	for _, id := range []string{"a", "b"} {
		socks[id] = "unix:" + filepath.Join(dir, id+".sock")
		f := &clusterFlags{config: cfg, control: socks[id], controlSet: true, node: id}
		go func() { errs <- runCluster(ctx, f, testLogger(t)) }()
	}
	defer func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("runCluster: %v", err)
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var st struct {
			Cluster struct {
				Role  string `json:"role"`
				Nodes []struct {
					ID    string `json:"id"`
					State string `json:"state"`
				} `json:"nodes"`
				Table struct{ Version int } `json:"table"`
			} `json:"cluster"`
		}
		err := control.Call(socks["a"], "status", nil, &st)
		if err == nil && st.Cluster.Role == "active" && st.Cluster.Table.Version > 0 &&
			len(st.Cluster.Nodes) == 2 && st.Cluster.Nodes[1].State == "alive" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node a never became active with b alive: %+v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var raw json.RawMessage
	for {
		if err := control.Call(socks["b"], "nodes", nil, &raw); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), `"role":"standby"`) && strings.Contains(string(raw), `"disk-a"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's nodes answer: %s", raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClusterModeRefusesReadableKeyAndBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := writeCluster(t, dir, 0o644, 25406)
	err := runCluster(context.Background(), &clusterFlags{config: cfg, control: "unix:" + filepath.Join(dir, "s"), controlSet: true, node: "a"}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "readable by root only") {
		t.Errorf("world-readable key: %v", err)
	}
	err = runCluster(context.Background(), &clusterFlags{config: cfg, control: "unix:" + filepath.Join(dir, "s"), controlSet: true, node: "zz"}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "node: this node \"zz\" is not in nodes") {
		t.Errorf("unknown node: %v", err)
	}
	err = runCluster(context.Background(), &clusterFlags{config: filepath.Join(dir, "nope.yaml"), node: "a"}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("missing config: %v", err)
	}
}

// TestClusterModeNotifiesSystemd reads the sd_notify datagrams mirrord
// sends on a real NOTIFY_SOCKET: READY=1, WATCHDOG=1 while healthy and
// STOPPING=1 on the way out.
func TestClusterModeNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	cfg := writeCluster(t, dir, 0o600, 25407)
	sockPath := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sockPath)
	t.Setenv("WATCHDOG_USEC", "200000")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runCluster(ctx, &clusterFlags{config: cfg, control: "unix:" + filepath.Join(dir, "c.sock"), controlSet: true, node: "a"}, testLogger(t))
	}()
	got := map[string]bool{}
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !(got["READY=1"] && got["WATCHDOG=1"]) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("notifications so far %v: %v", got, err)
		}
		got[string(buf[:n])] = true
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for !got["STOPPING=1"] {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no STOPPING=1: %v", err)
		}
		got[string(buf[:n])] = true
	}
}

// TestUnitFileMatchesFlags keeps systemd/mirrord.service honest: Type=notify
// with a watchdog, an ExecStart whose flags mirrord accepts, a reload that
// sends SIGHUP (which mirrord answers by reloading: TestSIGHUPReloadsTheClusterFile), a
// stop that signals mirrord alone, and a stop timeout longer than the
// hand-over mirrord allows itself with the shipped example's resources.
func TestUnitFileMatchesFlags(t *testing.T) {
	unit, err := os.ReadFile("../../systemd/mirrord.service")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	for k, want := range map[string]string{"Type": "notify", "KillMode": "mixed", "RuntimeDirectory": "hamirror", "StateDirectory": "hamirror"} {
		if got := keys[k]; len(got) != 1 || got[0] != want {
			t.Errorf("unit has %s=%v, want %s", k, got, want)
		}
	}
	if len(keys["WatchdogSec"]) != 1 {
		t.Errorf("unit has no WatchdogSec")
	}
	if len(keys["ExecStart"]) != 1 {
		t.Fatalf("ExecStart %v", keys["ExecStart"])
	}
	exec := strings.Fields(keys["ExecStart"][0])
	if len(exec) < 3 || filepath.Base(exec[0]) != "mirrord" {
		t.Fatalf("ExecStart %v", exec)
	}
	root := newRootCmd()
	if err := root.ParseFlags(exec[1:]); err != nil {
		t.Errorf("mirrord rejects the unit's flags %v: %v", exec[1:], err)
	}
	if cfg := root.Flags().Lookup("config").Value.String(); cfg != node.DefaultConfigPath {
		t.Errorf("the unit runs --config %s, want %s (what the example and the docs name)", cfg, node.DefaultConfigPath)
	}
	reload := keys["ExecReload"]
	if len(reload) == 0 || reload[len(reload)-1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload %q: want the last one to send SIGHUP to mirrord", reload)
	}
	// systemd writes minutes as "min"; Go as "m".
	stop, err := time.ParseDuration(strings.Replace(keys["TimeoutStopSec"][0], "min", "m", 1))
	if err != nil {
		t.Fatalf("TimeoutStopSec %v: %v", keys["TimeoutStopSec"], err)
	}
	example, err := node.LoadConfig("../../docs/cluster.example.yaml", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if bound := example.ShutdownTimeout(); stop <= bound {
		t.Errorf("TimeoutStopSec %v: the example's hand-over may take %v; systemd would kill the group in the middle of it", stop, bound)
	}
}

// testLogger sends a daemon's log to the test's.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
