package heartbeat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// MinSlotSize is the smallest disk heartbeat slot: a 2-byte length and a
// heartbeat frame of a two-node cluster with the longest names and the
// largest app state (779 bytes in all) fit in it. A frame echoes every
// peer (8 bytes each): clusters of more than about 30 nodes with long
// names need larger slots (Config.Validate says). A mirror leg's slots are
// 4096 bytes.
const MinSlotSize = 1024

// SlotDevice is where disk slots live: a mirror leg's reserved area
// (mirror.HeartbeatSlots), a block device or, in tests, a plain file.
type SlotDevice interface {
	io.ReaderAt
	io.WriterAt
}

// DiskLink is the disk heartbeat: Send rewrites this node's slot with the
// latest signed heartbeat frame; Receive polls the peers' slots and returns
// a slot's frame each time its content changes. The frame's sequence is
// what proves the slot advances; the state machine ignores a stale slot.
//
// Slot layout: 2-byte big-endian frame length, the frame, zero padding.
type DiskLink struct {
	name     string
	dev      SlotDevice
	off      int64
	slotSize int64
	self     int
	peers    []int
	poll     time.Duration

	mu      sync.Mutex
	last    map[int][]byte
	pending [][]byte
	done    chan struct{}
	once    sync.Once
}

// NewDiskLink serves medium name over count slots of slotSize bytes at off
// in dev. self is this node's slot; peers are the others' slots. The peers'
// slots are read every poll (use keepalive/2 or less: the delay between a
// peer's write and our read adds to dead-peer detection).
func NewDiskLink(name string, dev SlotDevice, off, slotSize int64, count, self int, peers []int, poll time.Duration) (*DiskLink, error) {
	switch {
	case slotSize < MinSlotSize:
		return nil, fmt.Errorf("disk heartbeat %s: slot size %d is below %d bytes", name, slotSize, MinSlotSize)
	case self < 0 || self >= count:
		return nil, fmt.Errorf("disk heartbeat %s: this node's slot %d is outside the %d slots", name, self, count)
	case poll <= 0:
		return nil, fmt.Errorf("disk heartbeat %s: poll interval must be positive", name)
	}
	for _, p := range peers {
		if p < 0 || p >= count || p == self {
			return nil, fmt.Errorf("disk heartbeat %s: peer slot %d is invalid", name, p)
		}
	}
	return &DiskLink{name: name, dev: dev, off: off, slotSize: slotSize, self: self,
		peers: slices.Clone(peers), poll: poll, last: map[int][]byte{}, done: make(chan struct{})}, nil
}

// Medium implements Link.
func (l *DiskLink) Medium() string { return l.name }

// Send implements Link: one write of the whole slot.
func (l *DiskLink) Send(frame []byte) error {
	if int64(len(frame))+2 > l.slotSize {
		return fmt.Errorf("disk heartbeat %s: frame of %d bytes does not fit a %d byte slot", l.name, len(frame), l.slotSize)
	}
	slot := make([]byte, l.slotSize)
	binary.BigEndian.PutUint16(slot, uint16(len(frame)))
	copy(slot[2:], frame)
	if _, err := l.dev.WriteAt(slot, l.off+int64(l.self)*l.slotSize); err != nil {
		return fmt.Errorf("disk heartbeat %s: writing slot %d: %w", l.name, l.self, err)
	}
	return nil
}

// Receive implements Link.
func (l *DiskLink) Receive() ([]byte, error) {
	t := time.NewTicker(l.poll)
	defer t.Stop()
	for {
		l.mu.Lock()
		if len(l.pending) > 0 {
			f := l.pending[0]
			l.pending = l.pending[1:]
			l.mu.Unlock()
			return f, nil
		}
		l.mu.Unlock()
		select {
		case <-l.done:
			return nil, ErrClosed
		case <-t.C:
		}
		l.scan()
	}
}

func (l *DiskLink) scan() {
	buf := make([]byte, l.slotSize)
	for _, p := range l.peers {
		n, err := l.dev.ReadAt(buf, l.off+int64(p)*l.slotSize)
		if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
			continue // unreadable now: the slot simply does not advance
		}
		fl := int(binary.BigEndian.Uint16(buf))
		if fl == 0 || int64(fl)+2 > l.slotSize {
			continue // never written, or garbage the codec would refuse anyway
		}
		frame := buf[2 : 2+fl]
		l.mu.Lock()
		if _, seen := l.last[p]; !seen {
			// The first read is a baseline, not a beat: what is in the
			// slot may be left from the peer's previous run (a power
			// cycle) and proves nothing; only a change does.
			l.last[p] = slices.Clone(frame)
		} else if !slices.Equal(l.last[p], frame) {
			l.last[p] = slices.Clone(frame)
			l.pending = append(l.pending, slices.Clone(frame))
		}
		l.mu.Unlock()
	}
}

// Close implements Link.
func (l *DiskLink) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil // dev belongs to the caller
}
