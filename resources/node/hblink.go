package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
)

// diskLink is a disk heartbeat medium on a mirror leg whose array may not
// have answered yet: membership needs a link for every configured medium
// from the start, so this one sends nothing and receives nothing until
// the session logged in and the slots were found in the leg's metadata.
type diskLink struct {
	name  string
	cfg   heartbeat.Config
	leg   mirror.Leg                      // the leg whose slots carry it
	wait  func(ctx context.Context) error // until the leg answered (nil: at once)
	owned bool                            // Close closes leg
	ready chan struct{}
	stop  context.CancelFunc

	mu   sync.Mutex
	link *heartbeat.DiskLink
	err  error
	done chan struct{} // closed by Close
}

func newDiskLink(cfg heartbeat.Config, name string, leg mirror.Leg, wait func(context.Context) error, owned bool) *diskLink {
	ctx, cancel := context.WithCancel(context.Background())
	l := &diskLink{name: name, cfg: cfg, leg: leg, wait: wait, owned: owned, ready: make(chan struct{}), stop: cancel}
	go l.open(ctx)
	return l
}

// open waits for the session, then finds the slots (retrying: a leg that
// answers but whose metadata cannot be read yet is tried again).
func (l *diskLink) open(ctx context.Context) {
	for {
		if l.wait != nil {
			if err := l.wait(ctx); err != nil {
				return
			}
		}
		off, size, n, err := mirror.HeartbeatSlots(l.leg)
		if err == nil {
			var link *heartbeat.DiskLink
			if link, err = l.cfg.DiskLinkFor(l.name, slotDev{l.leg}, off, size, n); err == nil {
				l.mu.Lock()
				l.link = link
				l.mu.Unlock()
				close(l.ready)
				return
			}
		}
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (l *diskLink) Medium() string { return l.name }

func (l *diskLink) current() (*heartbeat.DiskLink, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.link == nil {
		if l.err != nil {
			return nil, fmt.Errorf("disk heartbeat %s: %w", l.name, l.err)
		}
		return nil, fmt.Errorf("disk heartbeat %s: %w", l.name, iscsi.ErrNotConnected)
	}
	return l.link, nil
}

func (l *diskLink) Send(frame []byte) error {
	link, err := l.current()
	if err != nil {
		return err
	}
	return link.Send(frame)
}

func (l *diskLink) Receive() ([]byte, error) {
	select {
	case <-l.ready:
	case <-l.closed():
		return nil, heartbeat.ErrClosed
	}
	link, err := l.current()
	if err != nil {
		return nil, err
	}
	return link.Receive()
}

func (l *diskLink) closed() <-chan struct{} {
	// Closing cancels open's context; Receive before readiness waits on
	// a channel that Close closes.
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done == nil {
		l.done = make(chan struct{})
	}
	return l.done
}

func (l *diskLink) Close() error {
	l.stop()
	l.mu.Lock()
	link := l.link
	if l.done == nil {
		l.done = make(chan struct{})
	}
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	l.mu.Unlock()
	var err error
	if link != nil {
		err = link.Close()
	}
	if l.owned {
		err = errors.Join(err, l.leg.Close())
	}
	return err
}

// slotDev lets the heartbeat read and write its slots through a session.
// Writes use FUA: a slot update in the array's cache proves nothing.
type slotDev struct{ d mirror.Leg }

func (s slotDev) ReadAt(p []byte, off int64) (int, error) {
	if err := s.d.ReadAt(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s slotDev) WriteAt(p []byte, off int64) (int, error) {
	if err := s.d.WriteAt(p, off, true); err != nil {
		return 0, err
	}
	return len(p), nil
}
