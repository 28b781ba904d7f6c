package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/registry"
	"github.com/hamirror/hamirror/heartbeat/services"
)

func sampleStatus() heartbeat.Status {
	tb := heartbeat.BuildTable([]heartbeat.NodeID{"n1", "n2", "n3"},
		map[heartbeat.NodeID][]string{"n1": {"192.0.2.1"}, "n2": {"192.0.2.2"}, "n3": {"192.0.2.3", "10.0.1.3"}}, "n1", 1)
	tb.Fail("n2")
	tb.Version = 4
	two := 2
	return heartbeat.Status{Cluster: "pair1", Self: "n1", Role: "active", Coordinator: "n1", Uptime: 90 * time.Second,
		Table: tb,
		Nodes: []heartbeat.NodeStatus{
			{ID: "n1", Self: true, State: heartbeat.NodeAlive, Role: "active", Ping: &two,
				PingNote: "ping: public link eth1 has no carrier (check its cable, switch port or peer): score 0"},
			{ID: "n2", State: heartbeat.NodeDead, Role: "none", Media: []heartbeat.MediumStatus{
				{Name: "nic1", State: heartbeat.MediumDown, LastHeard: 5 * time.Second},
				{Name: "disk-a", Disk: true, State: heartbeat.MediumDown, LastHeard: -1}}},
			{ID: "n3", State: heartbeat.NodePartitioned, Role: "standby", Media: []heartbeat.MediumStatus{
				{Name: "nic1", State: heartbeat.MediumDown, LastHeard: 3 * time.Second},
				{Name: "disk-a", Disk: true, State: heartbeat.MediumUp}}},
		},
		Rejected: heartbeat.Counters{BadAuth: 3, Replayed: 1, Unconfirmed: 4},
	}
}

func TestRenderCluster(t *testing.T) {
	raw, _ := json.Marshal(sampleStatus())
	var b bytes.Buffer
	if err := renderCluster(&b, raw); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"cluster pair1: this node n1 is active (term 0); coordinator n1; up 1m30s",
		"NIC1", "DISK-A",
		"n2    dead",
		"down (5s)",
		"n3    partitioned  standby",
		"ALARM: n3 is partitioned",
		"refused frames: 3 bad auth, 1 replayed",
		"unconfirmed frames: 4",
		"n1's last ping round: ping: public link eth1 has no carrier",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if err := renderCluster(&b, json.RawMessage(`{"nodes": 5}`)); err == nil {
		t.Error("malformed status accepted")
	}
}

// TestNodesCommand runs `mirrorctl nodes` against a control socket that
// answers like mirrord.
func TestNodesCommand(t *testing.T) {
	sock := "unix:" + filepath.Join(t.TempDir(), "m.sock")
	srv, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Handle("nodes", func(json.RawMessage) (any, error) { return sampleStatus(), nil })
	go srv.Serve()

	run := func(args ...string) string {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(append([]string{"--control", sock}, args...))
		if err := root.Execute(); err != nil {
			t.Fatalf("mirrorctl %v: %v", args, err)
		}
		return out.String()
	}
	out := run("nodes")
	for _, want := range []string{
		"index table version 4, built by n1",
		"NODE  ADDRESSES           BACKUP TARGET  TARGET IP  STATE",
		"n1    192.0.2.1           n3             192.0.2.3  Normal",
		"n2    192.0.2.2           n3             192.0.2.3  Failed",
		"n3    192.0.2.3,10.0.1.3  n1             192.0.2.1  Normal",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nodes output lacks %q:\n%s", want, out)
		}
	}
	var st heartbeat.Status
	if err := json.Unmarshal([]byte(run("nodes", "--json")), &st); err != nil || st.Table.Version != 4 || st.Table.Rows[1].State != heartbeat.Failed {
		t.Errorf("nodes --json: %v %+v", err, st.Table)
	}
	root := newRootCmd()
	root.SetArgs([]string{"--control", "unix:" + filepath.Join(t.TempDir(), "none.sock"), "nodes"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "is it running") {
		t.Errorf("no daemon: %v", err)
	}
}

// TestStatusShowsClusterMembership: with mirrord running membership only,
// `mirrorctl status` shows the nodes and media instead of "not assembled",
// and exits 0.
func TestStatusShowsClusterMembership(t *testing.T) {
	sock := "unix:" + filepath.Join(t.TempDir(), "m.sock")
	srv, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Handle("status", func(json.RawMessage) (any, error) {
		return map[string]any{"cluster": sampleStatus()}, nil
	})
	go srv.Serve()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"--control", sock, "status"})
	if err := root.Execute(); err != nil {
		t.Fatalf("status: %v\n%s", err, out.String())
	}
	for _, want := range []string{"cluster pair1: this node n1 is active", "ALARM: n3 is partitioned"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "not assembled") {
		t.Errorf("membership-only status talks about a volume:\n%s", out.String())
	}
}

// TestNodesShowsTheRegistry: on a node that runs the cluster services,
// `mirrorctl nodes` also shows every registered node with the storage it
// reported (R11); a daemon without services answers without that table.
func TestNodesShowsTheRegistry(t *testing.T) {
	sock := "unix:" + filepath.Join(t.TempDir(), "m.sock")
	srv, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Handle("nodes", func(json.RawMessage) (any, error) { return sampleStatus(), nil })
	reg := registry.Table{Term: 2, Version: 7, Coordinator: "n1", Nodes: []registry.Node{
		{Row: heartbeat.Row{ID: "n1", BackupTarget: "n2", State: heartbeat.Normal},
			Storage:    registry.Storage{Location: "/var/lib/hamirror/services", Total: 100 << 30, Free: 40 << 30},
			Registered: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)},
		{Row: heartbeat.Row{ID: "n2", State: heartbeat.Failed}},
	}}
	srv.Handle("services", func(json.RawMessage) (any, error) { return services.Status{Self: "n1", Table: reg}, nil })
	go srv.Serve()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"--control", sock, "nodes"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"registered nodes (coordinator n1, term 2, table version 7)",
		"n1    Normal  n2             /var/lib/hamirror/services  40.0GiB  100.0GiB  2026-12-03 10:00:00Z",
		"n2    Failed  -              -                           0B       0B        -",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("nodes output lacks %q:\n%s", want, out.String())
		}
	}
}
