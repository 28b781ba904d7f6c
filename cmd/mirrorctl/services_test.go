package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/mlog"
	"github.com/hamirror/hamirror/heartbeat/registry"
	"github.com/hamirror/hamirror/heartbeat/services"
	"github.com/hamirror/hamirror/heartbeat/traffic"
)

// servicesDaemon answers log, traffic and node-remove like mirrord and
// records the arguments it got.
func servicesDaemon(t *testing.T) (string, map[string]json.RawMessage) {
	sock := "unix:" + filepath.Join(t.TempDir(), "m.sock")
	srv, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	got := map[string]json.RawMessage{}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	srv.Handle("log", func(a json.RawMessage) (any, error) {
		got["log"] = a
		return mlog.Result{Self: "n1", Spooled: map[heartbeat.NodeID]int{"n3": 2}, Entries: []mlog.Entry{
			{Time: at, Node: "n2", Seq: 7, Level: slog.LevelWarn, Component: "mirror", Message: "leg 1 failed", Fields: []mlog.Field{{Key: "error", Value: "i/o timeout"}}},
		}}, nil
	})
	srv.Handle("log-write", func(a json.RawMessage) (any, error) {
		got["log-write"] = a
		return mlog.Entry{Node: "n1", Seq: 8}, nil
	})
	srv.Handle("traffic", func(a json.RawMessage) (any, error) {
		got["traffic"] = a
		return traffic.Answer{Node: "n3", State: "Failed", Source: "n1", Samples: []traffic.Sample{
			{Node: "n3", Seq: 1, Time: at, Ifaces: []traffic.Counters{{Name: "eth1", RxBytes: 12345, TxDropped: 2}}}}}, nil
	})
	srv.Handle("node-remove", func(a json.RawMessage) (any, error) {
		got["node-remove"] = a
		t := registry.Table{Term: 1, Version: 9, Coordinator: "n1", Removed: []registry.Removed{{ID: "n3", BackupTarget: "n1"}}}
		t.Nodes = []registry.Node{{Row: heartbeat.Row{ID: "n1", BackupTarget: "n2", State: heartbeat.Normal}}, {Row: heartbeat.Row{ID: "n2", BackupTarget: "n1", State: heartbeat.Normal}}}
		return t, nil
	})
	go srv.Serve()
	return sock, got
}

func runCtl(t *testing.T, sock string, args ...string) string {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--control", sock}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("mirrorctl %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

func TestLogCommand(t *testing.T) {
	sock, got := servicesDaemon(t)
	out := runCtl(t, sock, "log", "--node", "n2", "--since", "2026-01-01")
	for _, want := range []string{"2026-01-02 03:04:05.000 n2", "WARN", "mirror", "leg 1 failed", `error="i/o timeout"`,
		"n3 is unreachable from n1: 2 entries wait in the spool"} {
		if !strings.Contains(out, want) {
			t.Errorf("log output lacks %q:\n%s", want, out)
		}
	}
	var q mlog.Query
	json.Unmarshal(got["log"], &q)
	if q.Node != "n2" || q.Since.Year() != 2026 || q.Limit != 1000 {
		t.Errorf("query sent: %s", got["log"])
	}
	var e mlog.Entry
	if err := json.Unmarshal([]byte(strings.TrimSpace(runCtl(t, sock, "log", "--json"))), &e); err != nil || e.Seq != 7 {
		t.Errorf("log --json: %v %+v", err, e)
	}
	if out := runCtl(t, sock, "log", "write", "--level", "warn", "replaced", "disk 3"); !strings.Contains(out, "written as n1/8") {
		t.Errorf("log write: %s", out)
	}
	if string(got["log-write"]) != `{"level":"WARN","message":"replaced disk 3"}` {
		t.Errorf("log-write args: %s", got["log-write"])
	}
	if _, err := parseSince("yesterday", time.Now()); err == nil {
		t.Error("a bad --since was accepted")
	}
	if s, _ := parseSince("90m", time.Unix(10000, 0)); !s.Equal(time.Unix(10000-5400, 0)) {
		t.Errorf("--since 90m: %v", s)
	}
}

func TestTrafficAndNodeRemoveCommands(t *testing.T) {
	sock, got := servicesDaemon(t)
	out := runCtl(t, sock, "traffic", "n3", "--since", "1h")
	for _, want := range []string{"traffic data of n3 (state Failed), from its backup target n1: 1 samples", "eth1", "12345"} {
		if !strings.Contains(out, want) {
			t.Errorf("traffic output lacks %q:\n%s", want, out)
		}
	}
	var a services.TrafficArgs
	json.Unmarshal(got["traffic"], &a)
	if a.Node != "n3" || time.Since(a.Since) < 59*time.Minute {
		t.Errorf("traffic args: %s", got["traffic"])
	}
	out = runCtl(t, sock, "node", "remove", "n3")
	if !strings.Contains(out, "n3 removed for good; its traffic data stays on n1") || !strings.Contains(out, "index table version 9") {
		t.Errorf("node remove output:\n%s", out)
	}
	if string(got["node-remove"]) != `{"id":"n3"}` {
		t.Errorf("node-remove args: %s", got["node-remove"])
	}
}
