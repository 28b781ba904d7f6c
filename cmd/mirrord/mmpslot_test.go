package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/mirror"
)

// The last heartbeat slot of a leg holds the multi-mount protection block:
// the disk heartbeat is never given it, so a node configured on it is
// refused (and every slot it may use lies before the MMP block).
func TestDiskHeartbeatNeverGetsTheMMPSlot(t *testing.T) {
	dir := t.TempDir()
	var legs [2]mirror.Leg
	for i := range legs {
		p := filepath.Join(dir, []string{"a", "b"}[i])
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 16<<20); err != nil {
			t.Fatal(err)
		}
		l, err := mirror.OpenLeg(p, mirror.LegOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		legs[i] = l
	}
	if _, err := mirror.Create(legs, mirror.CreateOptions{ChunkSize: 1 << 20, NodeSlots: 4}); err != nil {
		t.Fatal(err)
	}
	off, size, n, err := mirror.HeartbeatSlots(legs[0])
	if err != nil || n != 3 {
		t.Fatalf("HeartbeatSlots on a leg made with 4 slots: %d slots, %v; want 3 (the 4th is the MMP block)", n, err)
	}
	cfg := heartbeat.DefaultConfig()
	cfg.Cluster = "mmp"
	for i, id := range []string{"n1", "n2"} {
		slot := []int{0, 3}[i]
		cfg.Nodes = append(cfg.Nodes, heartbeat.Node{ID: heartbeat.NodeID(id), Slot: &slot})
	}
	for _, self := range []heartbeat.NodeID{"n1", "n2"} {
		cfg.Self = self
		_, err := legDiskLink(cfg, "disk-a", legs[0], off, size, n)
		if err == nil || !strings.Contains(err.Error(), "slot 3") {
			t.Fatalf("node %s with a node on the MMP slot: %v, want a refusal naming slot 3", self, err)
		}
	}
}
