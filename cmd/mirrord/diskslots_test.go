package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hamirror/hamirror/heartbeat"
)

// fileLeg is a mirror.Leg over a plain file, recording FUA writes.
type fileLeg struct {
	f   *os.File
	fua int
	bad bool
}

func (l *fileLeg) Name() string { return l.f.Name() }
func (l *fileLeg) Size() int64  { fi, _ := l.f.Stat(); return fi.Size() }
func (l *fileLeg) ReadAt(p []byte, off int64) error {
	if l.bad {
		return errors.New("leg failed")
	}
	_, err := l.f.ReadAt(p, off)
	return err
}
func (l *fileLeg) WriteAt(p []byte, off int64, fua bool) error {
	if fua {
		l.fua++
	}
	_, err := l.f.WriteAt(p, off)
	return err
}
func (l *fileLeg) Flush() error                         { return l.f.Sync() }
func (l *fileLeg) Zero(off, length int64, u bool) error { return nil }
func (l *fileLeg) Close() error                         { return l.f.Close() }

func TestLegDiskLinkWritesOwnSlotWithFUA(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "leg"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 20)
	leg := &fileLeg{f: f}
	defer leg.Close()
	cfg := heartbeat.DefaultConfig()
	cfg.Cluster, cfg.KeyFile, cfg.Self = "c", "/k", "b"
	for _, id := range []heartbeat.NodeID{"a", "b"} {
		cfg.Nodes = append(cfg.Nodes, heartbeat.Node{ID: id, Links: []heartbeat.NIC{{Medium: "nic1", Address: "x"}}})
	}
	const off = 1<<20 - 8*512
	link, err := legDiskLink(cfg, "disk-a", leg, off, 512, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := link.Send([]byte("frame")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 7)
	f.ReadAt(got, off+512) // node b is the second node: slot 1
	if string(got) != "\x00\x05frame" || leg.fua != 1 {
		t.Errorf("slot 1 holds %q after %d FUA writes", got, leg.fua)
	}
	leg.bad = true
	if _, err := (legSlots{leg}).ReadAt(got, 0); err == nil {
		t.Error("a failed leg read reported success")
	}
}
