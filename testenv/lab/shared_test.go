package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The package's scenarios share one booted pair of VMs (booting under TCG
// costs seconds each): n1 and n2, each with two 256 MiB disks (vdb... see
// shared config), linked by their ttyS1 and four networks.
var shared struct {
	once sync.Once
	lab  *Lab
	dir  string
	err  error
	keep bool
}

const legSize = 256 << 20

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.lab != nil {
		shared.lab.Close()
	}
	if shared.dir != "" {
		if code != 0 || shared.keep {
			fmt.Fprintf(os.Stderr, "lab: console logs kept in %s\n", shared.dir)
		} else {
			os.RemoveAll(shared.dir)
		}
	}
	os.Exit(code)
}

// sharedLab boots the shared lab on first use, or skips the test with the
// reason the lab cannot run on this machine.
func sharedLab(t *testing.T) *Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU lab skipped in -short mode")
	}
	if err := Prerequisites(); err != nil {
		t.Skipf("SKIPPING QEMU LAB: %v", err)
	}
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "hamirror-lab-")
		if shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		disks := func() []Disk {
			return []Disk{{Name: "scratch", Size: 64 << 20}, {Name: "leg0", Size: legSize}, {Name: "leg1", Size: legSize}}
		}
		start := time.Now()
		shared.lab, shared.err = Start(ctx, Config{
			Dir:      shared.dir,
			Nodes:    []NodeConfig{{Name: "n1", Disks: disks()}, {Name: "n2", Disks: disks()}},
			Deadline: time.Now().Add(15 * time.Minute),
			Logf:     func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
		})
		fmt.Fprintf(os.Stderr, "lab: image + boot of 2 VMs took %v\n", time.Since(start).Round(time.Millisecond))
	})
	if shared.err != nil {
		t.Fatalf("starting the lab: %v (logs in %s)", shared.err, shared.dir)
	}
	t.Cleanup(func() {
		if t.Failed() {
			shared.keep = true
			for _, n := range shared.lab.Nodes() {
				t.Logf("console of %s (%s):\n%s", n.Name, n.ConsoleLogPath(), tail(n.ConsoleLog(), 60))
				if b, err := os.ReadFile(filepath.Join(shared.dir, n.Name+".qemu.log")); err == nil {
					_, msgs, _ := strings.Cut(string(b), "\n\n") // after the command line
					t.Logf("QEMU messages of %s:\n%s", n.Name, tail(msgs, 20))
				}
			}
		}
	})
	return shared.lab
}

// run runs script on n and fails the test unless it exits 0.
func run(t *testing.T, n *Node, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := n.Run(ctx, script)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	if res.Exit != 0 {
		t.Fatalf("%s: %q: %v", n.Name, script, res.Err())
	}
	return res.Stdout
}

func TestBootAndAgent(t *testing.T) {
	l := sharedLab(t)
	for _, n := range l.Nodes() {
		t.Logf("%s booted in %v", n.Name, n.BootTime)
		if got := run(t, n, "hostname"); got != n.Name+"\n" {
			t.Errorf("hostname on %s = %q", n.Name, got)
		}
		ctx := context.Background()
		res, err := n.Run(ctx, "echo out; echo err >&2; exit 3")
		if err != nil || res.Exit != 3 || res.Stdout != "out\n" || res.Stderr != "err\n" {
			t.Errorf("exit code and streams: %+v %v", res, err)
		}
		if err := n.Put(ctx, "/tmp/put/x.sh", []byte("#!/bin/sh\necho put-ok\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if got := run(t, n, "/tmp/put/x.sh"); got != "put-ok\n" {
			t.Errorf("put script printed %q", got)
		}
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err = n.Run(tctx, "sleep 30")
		cancel()
		if err == nil && res.Exit == 0 {
			t.Errorf("a command past its deadline succeeded: %+v", res)
		}
		if got := consoleSays(t, n, "echo console-$((40+2))", "console-42"); !got {
			t.Errorf("%s: the console socket does not give a shell; log:\n%s", n.Name, tail(n.ConsoleLog(), 10))
		}
		if got := run(t, n, "lsmod | grep -c -e ^nbd -e ^raid1 -e ^dm_mirror"); got != "3\n" {
			t.Errorf("modules nbd, raid1, dm_mirror loaded: %q", got)
		}
	}
}

// consoleSays types cmd on n's console (ttyS0) and reports whether want
// shows up in what the console prints back within 20 s.
func consoleSays(t *testing.T, n *Node, cmd, want string) bool {
	t.Helper()
	c, err := net.Dial("unix", n.ConsoleSocket())
	if err != nil {
		t.Fatalf("console %s: %v", n.ConsoleSocket(), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		k, err := c.Read(buf)
		got = append(got, buf[:k]...)
		if strings.Contains(string(got), want) {
			return true
		}
		if err != nil {
			return false
		}
	}
}
