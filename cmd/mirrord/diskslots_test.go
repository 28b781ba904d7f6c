package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/mirror"
)

// TestClusterDiskHeartbeatOnMirrorLegs: disk heartbeats configured with
// `leg:` beat in the slots the mirror engine reserved on the legs — the
// peer sees them up — and never touch the data area or the metadata.
func TestClusterDiskHeartbeatOnMirrorLegs(t *testing.T) {
	dir := t.TempDir()
	const size = 16 << 20
	var legPaths [2]string
	var legs [2]mirror.Leg
	for i := range legPaths {
		legPaths[i] = filepath.Join(dir, fmt.Sprintf("leg%d.img", i))
		if err := os.WriteFile(legPaths[i], nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(legPaths[i], size); err != nil {
			t.Fatal(err)
		}
		l, err := mirror.OpenLeg(legPaths[i], mirror.LegOptions{})
		if err != nil {
			t.Fatal(err)
		}
		legs[i] = l
	}
	if _, err := mirror.Create(legs, mirror.CreateOptions{ChunkSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, l := range legs {
		l.Close()
	}
	key := filepath.Join(dir, "cluster.key")
	os.WriteFile(key, []byte("a-test-cluster-key-of-enough-bytes"), 0o600)
	cfg := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
cluster: {name: disktest, key_file: %s, preferred: a, port: 25419, state_dir: %s}
timing: {keepalive: 50ms, warn: 250ms, dead: 500ms, initdead: 2s}
nodes:
  - id: a
    links: [{medium: nic1, address: 127.0.0.1}]
  - id: b
    links: [{medium: nic1, address: 127.0.0.2}]
disks:
  - {name: disk-a, leg: %s}
  - {name: disk-b, leg: %s}
`, key, filepath.Join(dir, "state"), legPaths[0], legPaths[1])), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	socks := map[string]string{}
	for _, id := range []string{"a", "b"} {
		socks[id] = "unix:" + filepath.Join(dir, id+".sock")
		f := &clusterFlags{config: cfg, control: socks[id], controlSet: true, node: id}
		go func() { errs <- runCluster(ctx, f, testLogger(t)) }()
	}
	stop := func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("runCluster: %v", err)
			}
		}
	}
	defer func() {
		if ctx.Err() == nil {
			stop()
		}
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		var st heartbeat.Status
		err := control.Call(socks["a"], "nodes", nil, &st)
		up := map[string]bool{}
		for _, n := range st.Nodes {
			if n.ID == "b" {
				for _, m := range n.Media {
					up[m.Name] = m.State == heartbeat.MediumUp
				}
			}
		}
		if err == nil && up["disk-a"] && up["disk-b"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a never saw b's disk heartbeats up on the legs: %v %+v", err, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()

	for _, p := range legPaths {
		l, err := mirror.OpenLeg(p, mirror.LegOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if _, err := mirror.Examine(l); err != nil {
			t.Fatalf("%s: metadata damaged by the disk heartbeat: %v", p, err)
		}
		off, slotSize, n, err := mirror.HeartbeatSlots(l)
		if err != nil {
			t.Fatal(err)
		}
		area := make([]byte, slotSize*int64(n))
		if err := l.ReadAt(area, off); err != nil {
			t.Fatal(err)
		}
		if bytes.Count(area, []byte{0}) == len(area) {
			t.Errorf("%s: no heartbeat written in the reserved slots", p)
		}
		data := make([]byte, off)
		if err := l.ReadAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if bytes.Count(data, []byte{0}) != len(data) {
			t.Errorf("%s: the disk heartbeat wrote into the data area", p)
		}
	}
}
