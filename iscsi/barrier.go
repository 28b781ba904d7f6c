package iscsi

import (
	"errors"
	"fmt"
)

// ErrNoBarrier: the LUN does not promise that an ORDERED command waits
// for other initiators' commands (its control mode page names a task set
// per I_T nexus, or the page is missing), so Barrier cannot prove them
// ended.
var ErrNoBarrier = errors.New("iscsi: the LUN keeps no task set shared by every initiator: no ordered barrier")

const (
	scsiModeSense6 = 0x1a
	// pageControl is the Control mode page (SPC-4 7.5.8).
	pageControl = 0x0a
)

func cdbModeSense6(page byte, alloc byte) []byte {
	return []byte{scsiModeSense6, 0x08 /* DBD: no block descriptors */, page, 0, alloc, 0}
}

// decodeControlTST returns the TST field (task set type) of the Control
// mode page in a MODE SENSE(6) answer: 0 one task set for every I_T
// nexus, 1 one per nexus.
func decodeControlTST(b []byte) (byte, error) {
	if len(b) < 4 {
		return 0, fmt.Errorf("iscsi: MODE SENSE answer of %d bytes, want a 4-byte header", len(b))
	}
	n := min(int(b[0])+1, len(b))
	off := 4 + int(b[3]) // past the block descriptors, if any
	if off+3 > n {
		return 0, fmt.Errorf("iscsi: MODE SENSE answer of %d bytes holds no mode page after %d bytes of header", n, off)
	}
	if page, spf := b[off]&0x3f, b[off]&0x40 != 0; page != pageControl || spf {
		return 0, fmt.Errorf("iscsi: MODE SENSE answered page %#x (subpage format %v), want the Control page %#x", page, spf, pageControl)
	}
	if b[off+1] < 1 {
		return 0, fmt.Errorf("iscsi: Control mode page of length %d", b[off+1])
	}
	return b[off+2] >> 5, nil
}

// Barrier returns once every command the LUN admitted before it, from any
// initiator, has ended: a TEST UNIT READY with the ORDERED task attribute
// (SAM-5: an ORDERED command starts only after every older command of its
// task set ended), on a LUN whose Control mode page says one task set is
// shared by every I_T nexus (TST 000b). It returns ErrNoBarrier where the
// LUN keeps a task set per nexus or does not say (ORDERED then orders this
// session's commands only).
//
// After a PREEMPT that did not abort the victim's commands, a Barrier
// proves the ones the array admitted before it have landed.
func (d *Disk) Barrier() error {
	buf := make([]byte, 64)
	res, err := d.do(command{Op: "MODE SENSE(6)", CDB: cdbModeSense6(pageControl, byte(len(buf))), Read: buf})
	if err != nil {
		if errors.Is(err, ErrIllegalRequest) {
			return fmt.Errorf("%w: no Control mode page (%v)", ErrNoBarrier, err)
		}
		return err
	}
	tst, err := decodeControlTST(buf[:res.Received])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoBarrier, err)
	}
	if tst != 0 {
		return fmt.Errorf("%w (Control mode page TST %d)", ErrNoBarrier, tst)
	}
	_, err = d.do(command{Op: "TEST UNIT READY (ORDERED)", CDB: cdbTestUnitReady(), Ordered: true})
	return err
}
