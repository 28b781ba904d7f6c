package legtest

import (
	"errors"
	"fmt"
	"sync"
)

// ErrClosed is returned by a closed leg.
var ErrClosed = errors.New("leg is closed")

// MemLeg is a leg held in memory (a fake RAM disk). Safe for concurrent use.
type MemLeg struct {
	name   string
	mu     sync.RWMutex
	data   []byte
	closed bool
	// Flushes counts Flush calls (for tests that check FLUSH reached the leg).
	flushes, fuas int
}

// NewMemLeg returns a zeroed leg of size bytes.
func NewMemLeg(name string, size int64) *MemLeg {
	return &MemLeg{name: name, data: make([]byte, size)}
}

func (m *MemLeg) Name() string { return m.name }
func (m *MemLeg) Size() int64  { return int64(len(m.data)) }

func (m *MemLeg) check(off, n int64) error {
	if m.closed {
		return fmt.Errorf("%s: %w", m.name, ErrClosed)
	}
	if off < 0 || n < 0 || off+n > int64(len(m.data)) {
		return fmt.Errorf("%s: I/O [%d, +%d) outside %d bytes", m.name, off, n, len(m.data))
	}
	return nil
}

func (m *MemLeg) ReadAt(p []byte, off int64) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(p, m.data[off:])
	return nil
}

func (m *MemLeg) WriteAt(p []byte, off int64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(m.data[off:], p)
	if fua {
		m.fuas++
	}
	return nil
}

func (m *MemLeg) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("%s: %w", m.name, ErrClosed)
	}
	m.flushes++
	return nil
}

func (m *MemLeg) Zero(off, length int64, unmap bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, length); err != nil {
		return err
	}
	clear(m.data[off : off+length])
	return nil
}

// Close marks the leg closed; Reopen makes it usable again (same data).
func (m *MemLeg) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// Reopen undoes Close, like opening the same device again.
func (m *MemLeg) Reopen() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = false
}

// Bytes returns a copy of the leg's contents.
func (m *MemLeg) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}

// Flushes returns how many Flush calls the leg received.
func (m *MemLeg) Flushes() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.flushes
}
