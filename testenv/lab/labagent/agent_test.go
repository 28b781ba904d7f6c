package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/testenv/lab/agentproto"
)

func TestRunReportsExitCodeAndStreams(t *testing.T) {
	res := run(agentproto.Exec{ID: 4, Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}})
	if res.ID != 4 || res.Exit != 7 || string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" {
		t.Errorf("result %+v", res)
	}
	res = run(agentproto.Exec{Argv: []string{"cat"}, Stdin: []byte("in")})
	if res.Exit != 0 || string(res.Stdout) != "in" {
		t.Errorf("stdin: %+v", res)
	}
	res = run(agentproto.Exec{Argv: []string{"/nonexistent/tool"}})
	if res.Exit != -1 || res.Error == "" {
		t.Errorf("missing binary: %+v", res)
	}
}

func TestRunKillsAtTimeoutWithBackgroundChildren(t *testing.T) {
	res := run(agentproto.Exec{Argv: []string{"sh", "-c", "sleep 30 & sleep 30"}, TimeoutMS: 300})
	if res.Exit != -1 || !strings.Contains(res.Error, "killed") {
		t.Errorf("timeout: %+v", res)
	}
	// A background child holding stdout open does not hold the answer.
	res = run(agentproto.Exec{Argv: []string{"sh", "-c", "sleep 20 & echo started"}, TimeoutMS: 10000})
	if res.Exit != 0 || string(res.Stdout) != "started\n" {
		t.Errorf("background child: %+v", res)
	}
}

func TestOutputIsCappedToOneFrame(t *testing.T) {
	res := run(agentproto.Exec{Argv: []string{"sh", "-c", "head -c 6000000 /dev/zero"}})
	if len(res.Stdout) != 4<<20 {
		t.Errorf("kept %d bytes of output, want %d", len(res.Stdout), 4<<20)
	}
	if _, err := agentproto.Encode(agentproto.TypeResult, res); err != nil {
		t.Errorf("capped result does not fit a frame: %v", err)
	}
}

func TestPutWritesFileWithMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a", "b", "script")
	res := write(agentproto.Put{ID: 2, Path: p, Mode: 0o750, Data: []byte("x")})
	if res.Exit != 0 || res.ID != 2 {
		t.Fatalf("%+v", res)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("mode %v %v", st.Mode(), err)
	}
	if res := write(agentproto.Put{Path: "/proc/nope/x", Data: []byte("x")}); res.Exit == 0 {
		t.Error("unwritable path reported success")
	}
}

func TestWriteLoadCountsBlocks(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dev")
	os.WriteFile(p, make([]byte, 1<<20), 0o600)
	stdout := os.Stdout
	r, w, _ := os.Pipe()
	os.Stdout = w
	err := writeMain([]string{"-path", p, "-bs", "4096", "-size", "1048576", "-count", "50", "-random", "-direct=false"})
	os.Stdout = stdout
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]float64
	if err := json.NewDecoder(r).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got["ops"] != 50 || got["bytes"] != 50*4096 || got["seconds"] <= 0 {
		t.Errorf("stats %v", got)
	}
	b, _ := os.ReadFile(p)
	if len(b) != 1<<20 {
		t.Errorf("random writes below size grew the file to %d", len(b))
	}
}
