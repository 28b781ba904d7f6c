package lab

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// A lab whose deadline passes has every VM killed: here the deadline hits
// during boot, so Start returns promptly with an error naming the logs.
func TestDeadlineKillsVMs(t *testing.T) {
	sharedLab(t) // skips where the lab cannot run; builds the image once
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin := time.Now()
	l, err := Start(ctx, Config{
		Dir:         dir,
		Nodes:       []NodeConfig{{Name: "hung"}},
		Image:       shared.lab.Image,
		Deadline:    time.Now().Add(time.Second),
		BootTimeout: 90 * time.Second,
	})
	if err == nil {
		l.Close()
		t.Fatal("Start succeeded although the deadline passed during boot")
	}
	if took := time.Since(begin); took > 30*time.Second {
		t.Errorf("Start returned %v after the deadline", took)
	}
	if !strings.Contains(err.Error(), "exited during boot") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error does not say the VM died and where its logs are: %v", err)
	}
	if _, err := os.Stat(dir + "/hung.qemu.log"); err != nil {
		t.Errorf("QEMU log not kept: %v", err)
	}
}
