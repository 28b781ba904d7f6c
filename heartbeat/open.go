package heartbeat

import (
	"errors"
	"fmt"
	"os"
)

// OpenLinks opens the local node's media from the config: a UDP socket
// per private NIC, the serial line, and the disks that have a Path. Disks
// without a Path are the mirror legs' reserved slots: the caller adds
// their links with NewDiskLink (see DiskLinkFor). On error, every link
// opened so far is closed.
func OpenLinks(c Config) ([]Link, error) {
	self, ok := c.NodeByID(c.Self)
	if !ok {
		return nil, fmt.Errorf("heartbeat: %w: %q", ErrNoSelf, c.Self)
	}
	var links []Link
	fail := func(err error) ([]Link, error) {
		for _, l := range links {
			l.Close()
		}
		return nil, err
	}
	for _, nic := range self.Links {
		var peers []string
		for _, n := range c.Nodes {
			if n.ID == c.Self {
				continue
			}
			for _, l := range n.Links {
				if l.Medium == nic.Medium {
					peers = append(peers, l.Address)
				}
			}
		}
		l, err := ListenUDP(nic.Medium, nic.Interface, nic.Address, c.Port, peers)
		if err != nil {
			return fail(err)
		}
		links = append(links, l)
	}
	if self.Serial != "" {
		l, err := OpenSerial(self.Serial, c.Baud)
		if err != nil {
			return fail(err)
		}
		links = append(links, l)
	}
	for _, d := range c.Disks {
		if d.Path == "" {
			continue
		}
		f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
		if err != nil {
			return fail(fmt.Errorf("disk heartbeat %s: %w", d.Name, err))
		}
		l, err := c.DiskLinkFor(d.Name, f, d.Offset, d.SlotSize, d.Slots)
		if err != nil {
			f.Close()
			return fail(err)
		}
		links = append(links, &fileDiskLink{DiskLink: l, f: f})
	}
	return links, nil
}

// DiskLinkFor makes the disk medium name over dev for this node: its own
// slot and its peers' slots come from the config (nodes[].slot or list
// position); the peers' slots are polled every keepalive/4.
func (c *Config) DiskLinkFor(name string, dev SlotDevice, off, slotSize int64, count int) (*DiskLink, error) {
	if need := c.slotNeeded(name); slotSize < need {
		return nil, fmt.Errorf("disk heartbeat %s: %d byte slots cannot hold a heartbeat of this %d node cluster: at least %d bytes are needed", name, slotSize, len(c.Nodes), need)
	}
	var peers []int
	for _, n := range c.Nodes {
		if n.ID != c.Self {
			peers = append(peers, c.SlotOf(n.ID))
		}
	}
	return NewDiskLink(name, dev, off, slotSize, count, c.SlotOf(c.Self), peers, c.Timing.Keepalive/4)
}

type fileDiskLink struct {
	*DiskLink
	f *os.File
}

func (l *fileDiskLink) Close() error { return errors.Join(l.DiskLink.Close(), l.f.Close()) }
