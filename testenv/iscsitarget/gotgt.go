package iscsitarget

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gostor/gotgt/pkg/config"
	_ "github.com/gostor/gotgt/pkg/port/iscsit" // registers the "iscsi" target driver
	"github.com/gostor/gotgt/pkg/scsi"
	_ "github.com/gostor/gotgt/pkg/scsi/backingstore" // registers the "null" store gotgt needs for its LUN 0 stand-in
	"github.com/gostor/gotgt/pkg/scsi/backingstore/remote"
	"github.com/sirupsen/logrus"
)

// Fault is what a FaultStore does to the I/O it receives.
type Fault int

const (
	FaultNone  Fault = iota // serve I/O normally
	FaultFail               // fail every read, write and sync (MEDIUM ERROR at the initiator)
	FaultHang               // block every I/O until Heal
	FaultDelay              // sleep Delay before each I/O
)

// FaultStore is an in-memory backing store for gotgt whose I/O can be made
// to fail, hang or slow down on command. It is a fake at the storage layer
// because a real disk cannot be told to hang or fail one I/O; the iSCSI and
// SCSI layers above it are gotgt's real target code.
type FaultStore struct {
	mu     sync.RWMutex
	data   []byte
	fault  Fault
	delay  time.Duration
	healed chan struct{}
	ios    atomic.Int64
}

// NewFaultStore returns a zeroed store of size bytes.
func NewFaultStore(size int64) *FaultStore {
	return &FaultStore{data: make([]byte, size), healed: make(chan struct{})}
}

// Set changes the fault; delay applies to FaultDelay.
func (s *FaultStore) Set(f Fault, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fault == FaultHang && f != FaultHang {
		close(s.healed)
		s.healed = make(chan struct{})
	}
	s.fault, s.delay = f, delay
}

// Heal returns the store to normal service, releasing hung I/O.
func (s *FaultStore) Heal() { s.Set(FaultNone, 0) }

// IOs counts the I/O requests the store received.
func (s *FaultStore) IOs() int64 { return s.ios.Load() }

var errInjected = errors.New("injected backing store failure")

func (s *FaultStore) apply() error {
	s.ios.Add(1)
	s.mu.RLock()
	f, d, healed := s.fault, s.delay, s.healed
	s.mu.RUnlock()
	switch f {
	case FaultFail:
		return errInjected
	case FaultHang:
		<-healed
	case FaultDelay:
		time.Sleep(d)
	}
	return nil
}

// ReadAt implements gotgt's api.RemoteBackingStore.
func (s *FaultStore) ReadAt(p []byte, off int64) (int, error) {
	if err := s.apply(); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if off < 0 || off+int64(len(p)) > int64(len(s.data)) {
		return 0, fmt.Errorf("read of %d at %d beyond %d", len(p), off, len(s.data))
	}
	return copy(p, s.data[off:]), nil
}

// WriteAt implements gotgt's api.RemoteBackingStore.
func (s *FaultStore) WriteAt(p []byte, off int64) (int, error) {
	if err := s.apply(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(s.data)) {
		return 0, fmt.Errorf("write of %d at %d beyond %d", len(p), off, len(s.data))
	}
	return copy(s.data[off:], p), nil
}

// Sync implements gotgt's api.RemoteBackingStore.
func (s *FaultStore) Sync() (int, error) { return 0, s.apply() }

// Unmap implements gotgt's api.RemoteBackingStore (never advertised: the
// LUN is thick).
func (s *FaultStore) Unmap(int64, int64) (int, error) { return 0, nil }

// Bytes returns a copy of [off, off+n) as stored.
func (s *FaultStore) Bytes(off int64, n int) []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]byte(nil), s.data[off:off+int64(n)]...)
}

// Gotgt is one target of gotgt v0.2.2 running in this process, whose
// LUN 0 is a FaultStore. gotgt keeps its target service and LUN map in
// package globals (one SCSITargetService per process), so every Gotgt shares
// one driver and one portal, each with a unique target name, and all Gotgt
// LUNs share one size. Fault injection is through Store; Close only heals
// the store (gotgt cannot remove a target).
//
// Avoided gotgt paths (broken in v0.2.2): WRITE SAME (returns GOOD without
// writing — the LUN is thick so the initiator never uses it), PERSISTENT
// RESERVE (disabled here), ORWRITE(16) (disabled: it crashes gotgt).
type Gotgt struct {
	Portal string
	IQN    string
	Store  *FaultStore
}

// gotgtProcess is gotgt's process-wide state.
var gotgtProcess struct {
	sync.Mutex
	size   uint64
	seq    int
	portal string
	driver scsi.SCSITargetDriver
}

// StartGotgt adds a gotgt target serving a FaultStore of size bytes,
// starting gotgt on a free loopback port the first time.
func StartGotgt(size int64) (*Gotgt, error) {
	p := &gotgtProcess
	p.Lock()
	defer p.Unlock()
	if p.size != 0 && p.size != uint64(size) {
		return nil, fmt.Errorf("gotgt LUNs in one process share one size (%d), asked for %d", p.size, size)
	}
	if p.driver == nil {
		logrus.SetLevel(logrus.ErrorLevel)
		scsi.EnableORWrite16 = false
		scsi.EnablePersistentReservation = false
		scsi.EnableMultipath = false
		remote.Size = uint64(size)
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p.driver, err = scsi.NewTargetDriver("iscsi", scsi.NewSCSITargetService())
		if err != nil {
			return nil, fmt.Errorf("gotgt driver: %w", err)
		}
		p.size = uint64(size)
		p.portal = fmt.Sprintf("127.0.0.1:%d", port)
		go p.driver.Run(port)
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", p.portal, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("gotgt not listening on %s: %w", p.portal, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	p.seq++
	g := &Gotgt{
		Portal: p.portal,
		IQN:    fmt.Sprintf("iqn.2026-01.org.hamirror.gotgt:t%d", p.seq),
		Store:  NewFaultStore(size),
	}
	cfg := &config.Config{
		ISCSIPortals: []config.ISCSIPortalInfo{{ID: 0, Portal: g.Portal}},
		ISCSITargets: map[string]config.ISCSITarget{
			g.IQN: {TPGTs: map[string][]uint64{"1": {0}}, LUNs: map[string]uint64{"0": 0}},
		},
	}
	err := scsi.InitSCSILUMapEx(&config.BackendStorage{
		DeviceID: uint64(1000 + p.seq), Path: "RemBs:" + g.IQN, Online: true, BlockShift: 9,
	}, g.IQN, 0, g.Store)
	if err != nil {
		return nil, fmt.Errorf("gotgt LUN: %w", err)
	}
	if err := p.driver.NewTarget(g.IQN, cfg); err != nil {
		return nil, fmt.Errorf("gotgt target: %w", err)
	}
	return g, nil
}

// URL is the iscsi:// address of the target's LUN 0.
func (g *Gotgt) URL() string { return "iscsi://" + g.Portal + "/" + g.IQN + "/0" }

// Close releases hung I/O; the target itself lives until the process ends.
func (g *Gotgt) Close() error {
	g.Store.Heal()
	return nil
}
