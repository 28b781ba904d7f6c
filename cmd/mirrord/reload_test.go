package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
)

// TestSIGHUPReloadsTheClusterFile runs mirrord in cluster mode, changes
// group.migration_threshold in its file and sends the process SIGHUP:
// the status then shows the new value. (Without the handler, SIGHUP
// would end the test binary.)
func TestSIGHUPReloadsTheClusterFile(t *testing.T) {
	dir := t.TempDir()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	cfg := writeCluster(t, dir, 0o600, port)
	sock := "unix:" + filepath.Join(dir, "a.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runCluster(ctx, &clusterFlags{config: cfg, control: sock, controlSet: true, node: "a"}, testLogger(t))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runCluster: %v", err)
		}
	}()
	threshold := func() int {
		var st struct {
			Group struct {
				MigrationThreshold int `json:"migration_threshold"`
			} `json:"group"`
		}
		if err := control.Call(sock, "status", nil, &st); err != nil {
			return -1
		}
		return st.Group.MigrationThreshold
	}
	deadline := time.Now().Add(5 * time.Second)
	for threshold() != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("mirrord does not answer with the default threshold 3: %d", threshold())
		}
		time.Sleep(20 * time.Millisecond)
	}
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("group: {migration_threshold: 2}\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for threshold() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP the threshold is %d, want 2", threshold())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
