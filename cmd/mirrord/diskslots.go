package main

import (
	"errors"
	"fmt"

	"github.com/hamirror/hamirror/cmd/internal/legopts"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
)

// legSlots lets the heartbeat read and write its disk slots on a mirror
// leg. Writes use FUA: a slot update that sits in the array's cache does
// not prove to the peer that this node is alive.
type legSlots struct{ leg mirror.Leg }

func (l legSlots) ReadAt(p []byte, off int64) (int, error) {
	if err := l.leg.ReadAt(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (l legSlots) WriteAt(p []byte, off int64) (int, error) {
	if err := l.leg.WriteAt(p, off, true); err != nil {
		return 0, err
	}
	return len(p), nil
}

// legDiskLink is the disk heartbeat medium `name` (a disks[] entry of the
// cluster file without a path) over the slots the mirror engine reserved
// at the end of leg. Wiring, once the volume is assembled:
//
//	off, size, n, err := mirror.HeartbeatSlots(leg)
//	link, err := legDiskLink(cfg, "disk-a", leg, off, size, n)
//	links = append(links, link) // before heartbeat.NewMember
func legDiskLink(cfg heartbeat.Config, name string, leg mirror.Leg, off, slotSize int64, count int) (*heartbeat.DiskLink, error) {
	return cfg.DiskLinkFor(name, legSlots{leg}, off, slotSize, count)
}

// openLegDisk opens the disk heartbeat d over the slots reserved on the
// mirror leg d.Leg (made by mirrorctl create). Its iSCSI sessions are for
// iscsi.PurposeDiskHeartbeat: an ISID of their own, apart from the volume's.
func openLegDisk(cfg heartbeat.Config, d heartbeat.Disk, lf legopts.Flags) (heartbeat.Link, error) {
	lf.Purpose = iscsi.PurposeDiskHeartbeat
	leg, err := mirror.OpenLeg(d.Leg, lf.LegOptions(false))
	if err != nil {
		return nil, fmt.Errorf("disk heartbeat %s: %w", d.Name, err)
	}
	off, size, n, err := mirror.HeartbeatSlots(leg)
	if err == nil {
		var link *heartbeat.DiskLink
		if link, err = legDiskLink(cfg, d.Name, leg, off, size, n); err == nil {
			return &legLink{DiskLink: link, leg: leg}, nil
		}
	}
	leg.Close()
	return nil, fmt.Errorf("disk heartbeat %s on %s: %w", d.Name, d.Leg, err)
}

// legLink is a disk heartbeat that owns its leg.
type legLink struct {
	*heartbeat.DiskLink
	leg mirror.Leg
}

func (l *legLink) Close() error { return errors.Join(l.DiskLink.Close(), l.leg.Close()) }
