package legtest

import (
	"errors"
	"fmt"
)

// ErrAligned is what a SectorLeg answers to I/O that is not aligned to
// its sectors (as an iSCSI LUN refuses it).
var ErrAligned = errors.New("I/O not aligned to the sector size")

// SectorLeg wraps a leg and gives it sectors of a fixed size: it reports
// BlockSize and refuses I/O whose offset or length is not a multiple of
// it, as a 4096-byte-sector iSCSI LUN does. A FAKE for tests that need
// many such legs in memory; the real thing is a tgtd LUN created with
// --blocksize 4096.
type SectorLeg struct {
	Leg
	sector int64
}

// NewSectorLeg gives inner sectors of size bytes.
func NewSectorLeg(inner Leg, size int) *SectorLeg {
	return &SectorLeg{Leg: inner, sector: int64(size)}
}

// BlockSize is the sector size.
func (s *SectorLeg) BlockSize() int { return int(s.sector) }

func (s *SectorLeg) check(op string, off, n int64) error {
	if off%s.sector != 0 || n%s.sector != 0 {
		return fmt.Errorf("%s: %s of %d bytes at %d: %w (%d bytes)", s.Name(), op, n, off, ErrAligned, s.sector)
	}
	return nil
}

func (s *SectorLeg) ReadAt(p []byte, off int64) error {
	if err := s.check("read", off, int64(len(p))); err != nil {
		return err
	}
	return s.Leg.ReadAt(p, off)
}

func (s *SectorLeg) WriteAt(p []byte, off int64, fua bool) error {
	if err := s.check("write", off, int64(len(p))); err != nil {
		return err
	}
	return s.Leg.WriteAt(p, off, fua)
}

func (s *SectorLeg) Zero(off, length int64, unmap bool) error {
	if err := s.check("zero", off, length); err != nil {
		return err
	}
	return s.Leg.Zero(off, length, unmap)
}
