package legtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
)

// SectorSize is the CrashLeg's atomic unit: a sector is either entirely
// old or entirely new after a power cut.
const SectorSize = 4096

// ErrPowerCut is returned by every CrashLeg on a cut Power.
var ErrPowerCut = errors.New("power cut")

// Power is the supply shared by the legs of one machine: Cut stops every
// leg on it at once (in-flight I/O fails).
type Power struct {
	off       atomic.Bool
	countdown atomic.Int64
}

// Cut switches the power off.
func (p *Power) Cut() { p.off.Store(true) }

// CutAfter arranges for the power to fail just before the nth I/O (read,
// write, zero or flush, counted over every leg on this supply) from now.
func (p *Power) CutAfter(n int64) { p.countdown.Store(n) }

func (p *Power) tick() {
	if p.countdown.Load() > 0 && p.countdown.Add(-1) == 0 {
		p.Cut()
	}
}

// IsOff reports whether the power was cut.
func (p *Power) IsOff() bool { return p.off.Load() }

// CrashLeg is a fake disk with a volatile write cache: writes land in the
// cache, Flush (or a FUA write) makes them durable, and after a power cut
// Recover returns what a real disk could hold: every durable sector, and
// for each sector written since its last flush a seeded random pick of its
// durable content or one of the versions written since.
type CrashLeg struct {
	name    string
	power   *Power
	mu      sync.Mutex
	data    []byte             // what reads see (cache over media)
	durable []byte             // media
	pending map[int64][][]byte // sector -> versions written since it was last durable
	closed  bool
}

// NewCrashLeg returns a zeroed leg of size bytes (a multiple of SectorSize).
func NewCrashLeg(name string, size int64, power *Power) *CrashLeg {
	return &CrashLeg{name: name, power: power, data: make([]byte, size), durable: make([]byte, size), pending: map[int64][][]byte{}}
}

func (c *CrashLeg) Name() string { return c.name }
func (c *CrashLeg) Size() int64  { return int64(len(c.data)) }

func (c *CrashLeg) check(off, n int64) error {
	c.power.tick()
	if c.power.IsOff() {
		return fmt.Errorf("%s: %w", c.name, ErrPowerCut)
	}
	if c.closed {
		return fmt.Errorf("%s: %w", c.name, ErrClosed)
	}
	if off < 0 || n < 0 || off+n > int64(len(c.data)) {
		return fmt.Errorf("%s: I/O [%d, +%d) outside %d bytes", c.name, off, n, len(c.data))
	}
	return nil
}

func (c *CrashLeg) ReadAt(p []byte, off int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(p, c.data[off:])
	return nil
}

func (c *CrashLeg) WriteAt(p []byte, off int64, fua bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check(off, int64(len(p))); err != nil {
		return err
	}
	c.apply(off, int64(len(p)), fua, func(dst []byte, at int64) { copy(dst, p[at-off:]) })
	return nil
}

// apply changes [off, off+n) through fill, sector by sector.
func (c *CrashLeg) apply(off, n int64, fua bool, fill func(dst []byte, at int64)) {
	for s := off / SectorSize; s*SectorSize < off+n; s++ {
		lo, hi := max(off, s*SectorSize), min(off+n, (s+1)*SectorSize)
		fill(c.data[lo:hi], lo)
		sec := c.data[s*SectorSize : (s+1)*SectorSize]
		if fua {
			copy(c.durable[s*SectorSize:], sec)
			delete(c.pending, s)
		} else {
			c.pending[s] = append(c.pending[s], append([]byte(nil), sec...))
		}
	}
}

func (c *CrashLeg) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check(0, 0); err != nil {
		return err
	}
	for s := range c.pending {
		copy(c.durable[s*SectorSize:(s+1)*SectorSize], c.data[s*SectorSize:])
	}
	clear(c.pending)
	return nil
}

func (c *CrashLeg) Zero(off, length int64, unmap bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check(off, length); err != nil {
		return err
	}
	c.apply(off, length, false, func(dst []byte, _ int64) { clear(dst) })
	return nil
}

func (c *CrashLeg) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// Recover returns the leg as it comes back after the power cut, on a new
// Power: durable sectors, and for each unflushed sector a choice drawn
// from r of its durable content or one of its newer versions.
func (c *CrashLeg) Recover(r *rand.Rand, power *Power) *CrashLeg {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := NewCrashLeg(c.name, int64(len(c.data)), power)
	copy(n.durable, c.durable)
	secs := make([]int64, 0, len(c.pending))
	for s := range c.pending {
		secs = append(secs, s)
	}
	slices.Sort(secs)
	for _, s := range secs {
		versions := c.pending[s]
		if k := r.IntN(len(versions) + 1); k > 0 {
			copy(n.durable[s*SectorSize:(s+1)*SectorSize], versions[k-1])
		}
	}
	copy(n.data, n.durable)
	return n
}

// Bytes returns a copy of what reads see now.
func (c *CrashLeg) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.data...)
}
