package mirror

import (
	"errors"
	"fmt"
	"syscall"
)

// The volume's block size: the alignment it exports.
//
// A leg refuses I/O that is not aligned to its logical block size (an
// iSCSI LUN with 4096-byte sectors answers a 512-byte write with an
// error). The volume therefore exports the LARGEST logical block size of
// its legs (NBD INFO_BLOCK_SIZE minimum, the kernel device's sector size)
// and refuses a misaligned request itself, with EINVAL, before any leg
// sees it: a request the engine should have refused never fails a leg.
//
// Mixed legs (one 512-byte, one 4096-byte) are allowed: a 4096-aligned
// request is valid on both. The block size is fixed while the volume
// runs (clients negotiated it), so a leg whose blocks are larger than the
// export's is refused by AddLeg with ErrBlockSize; Options.BlockSize
// raises the export's block size ahead of time, so a 512-byte array can
// be replaced by a 4096-byte one without restarting.

// BlockSizer is a Leg that knows its logical block size: the alignment
// of offsets and lengths it accepts. An iSCSI LUN reports READ
// CAPACITY(16)'s block length; a block device its logical sector size; a
// regular file 512. A Leg without the method is taken as 512.
type BlockSizer interface {
	BlockSize() int
}

// Block sizes the engine supports: metadata I/O is 4096-aligned, so a
// leg with larger logical blocks cannot hold it.
const (
	minBlockSize = 512
	maxBlockSize = blockBytes
)

var (
	// ErrMisaligned: a request's offset or length is not a multiple of
	// the volume's block size. It matches syscall.EINVAL too (errors.Is),
	// which NBD clients receive.
	ErrMisaligned = errors.New("I/O not aligned to the volume's block size")
	// ErrBlockSize: a leg's logical block size is unsupported (above
	// 4096 or not a power of two) or larger than the running volume's.
	ErrBlockSize = errors.New("leg block size does not fit the volume")
)

// legBlockSize is leg's logical block size (512 when it does not say).
func legBlockSize(l Leg) int {
	if b, ok := l.(BlockSizer); ok && b.BlockSize() > 0 {
		return b.BlockSize()
	}
	return minBlockSize
}

// checkLegBlock refuses a leg whose logical block size the engine cannot
// use at all (metadata I/O is 4096 bytes at 4096-aligned offsets).
func checkLegBlock(l Leg) error {
	bs := legBlockSize(l)
	if bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("leg %s has %d-byte logical blocks; hamirror supports 512 to 4096: %w", l.Name(), bs, ErrBlockSize)
	}
	return nil
}

// volumeBlockSize is the block size a volume over legs exports: the
// largest of want (Options.BlockSize, 0 for none) and the legs' logical
// block sizes.
func volumeBlockSize(legs [2]Leg, want int) (int, error) {
	if want != 0 && (want < minBlockSize || want > maxBlockSize || want&(want-1) != 0) {
		return 0, fmt.Errorf("BlockSize %d: must be 512, 1024, 2048 or 4096", want)
	}
	bs := max(want, minBlockSize)
	for _, l := range legs {
		if l == nil {
			continue
		}
		if err := checkLegBlock(l); err != nil {
			return 0, err
		}
		bs = max(bs, legBlockSize(l))
	}
	return bs, nil
}

// BlockSize is the volume's block size: every offset and length must be
// a multiple of it (512 or up to 4096; the largest logical block size of
// the legs, or Options.BlockSize when larger). It never changes while
// the volume runs.
func (v *Volume) BlockSize() int { return v.blockSize }

// checkAlign refuses a request that is not aligned to the block size.
func (v *Volume) checkAlign(off, n int64) error {
	if bs := int64(v.blockSize); off%bs != 0 || n%bs != 0 {
		return fmt.Errorf("[%d, +%d) with %d-byte blocks: %w", off, n, bs, misaligned{})
	}
	return nil
}

// misaligned is ErrMisaligned that also matches syscall.EINVAL.
type misaligned struct{}

func (misaligned) Error() string { return ErrMisaligned.Error() }
func (misaligned) Is(target error) bool {
	return target == ErrMisaligned || target == syscall.EINVAL
}

// checkAddBlockSize refuses a leg whose logical blocks are larger than
// the running volume's (clients may send requests aligned only to the
// volume's block size, which the leg would refuse).
func (v *Volume) checkAddBlockSize(l Leg) error {
	if err := checkLegBlock(l); err != nil {
		return err
	}
	if bs := legBlockSize(l); bs > v.blockSize {
		return fmt.Errorf("leg %s has %d-byte logical blocks but the volume is exported with %d-byte blocks, so clients may send I/O the leg refuses; restart mirrord with --block-size %d (NBD clients reconnect), or use a leg with %d-byte blocks: %w",
			l.Name(), bs, v.blockSize, bs, v.blockSize, ErrBlockSize)
	}
	return nil
}
