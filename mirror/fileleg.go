package mirror

import (
	"errors"
	"fmt"
	"github.com/hamirror/hamirror/iscsi"
	"io"
	"os"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// LegOptions tune how OpenLeg opens a leg.
type LegOptions struct {
	ReadOnly bool // examine opens legs read-only
	// Buffered disables O_DIRECT (tests and tmpfs; O_DIRECT is tried first
	// and dropped automatically when the file system refuses it).
	Buffered bool
	// ISCSI configures iscsi:// legs (initiator name, CHAP secret files,
	// I/O timeout); the zero value uses package iscsi's defaults.
	ISCSI iscsi.Config
}

// OpenLeg opens a leg from a spec: an iscsi://[user@]host[:port]/iqn/lun URL
// (see package iscsi), or a path to a regular file or a block device. Writes use O_DIRECT where the file system allows it (falling back
// to buffered I/O when open(O_DIRECT) fails with EINVAL, e.g. on tmpfs),
// Flush is fdatasync, FUA is pwritev2(RWF_DSYNC) and Zero is fallocate
// (ZERO_RANGE, or PUNCH_HOLE|KEEP_SIZE with unmap; both also work on block
// devices), falling back to writing zeros.
func OpenLeg(spec string, opts LegOptions) (Leg, error) {
	if iscsi.IsLegSpec(spec) {
		return openISCSILeg(spec, opts)
	}
	if strings.Contains(spec, "://") {
		return nil, fmt.Errorf("open leg %q: unknown scheme (legs are iscsi:// URLs, files or block devices)", spec)
	}
	return openFileLeg(spec, opts)
}

// fileLeg is a Leg on a regular file or a block device.
type fileLeg struct {
	name   string
	size   int64
	direct *os.File // O_DIRECT descriptor, nil when the FS refuses it
	buf    *os.File // buffered descriptor for unaligned I/O
	bdev   bool
	block  int         // logical block size: the device's, 512 for a file
	pool   alignedPool // bounce buffers for unaligned callers' memory
}

func openFileLeg(path string, opts LegOptions) (*fileLeg, error) {
	flags := os.O_RDWR
	if opts.ReadOnly {
		flags = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("open leg: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open leg: %w", err)
	}
	l := &fileLeg{name: path, buf: f}
	switch {
	case st.Mode().IsRegular():
		l.size = st.Size()
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		l.bdev = true
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("open leg %s: size of block device: %w", path, err)
		}
		l.size = end
		if l.block, err = unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err != nil {
			f.Close()
			return nil, fmt.Errorf("open leg %s: logical block size of block device: %w", path, err)
		}
		if !opts.ReadOnly {
			// Claim the device exclusively, like mdadm: a mounted device, one
			// in use by md/dm or by another mirrord is refused (EBUSY).
			// Read-only opens (examine) stay shared.
			x, err := os.OpenFile(path, flags|unix.O_EXCL, 0)
			if err != nil {
				f.Close()
				if errors.Is(err, unix.EBUSY) {
					return nil, fmt.Errorf("open leg %s: the device is in use (mounted, part of md/dm, or held by another mirrord): %w", path, err)
				}
				return nil, fmt.Errorf("open leg: %w", err)
			}
			f.Close()
			l.buf = x
		}
	default:
		f.Close()
		return nil, fmt.Errorf("open leg %s: not a regular file or block device", path)
	}
	if !opts.Buffered {
		d, err := os.OpenFile(path, flags|unix.O_DIRECT, 0)
		switch {
		case err == nil:
			l.direct = d
		case errors.Is(err, unix.EINVAL):
			// tmpfs and some FUSE file systems: buffered I/O only.
		default:
			f.Close()
			return nil, fmt.Errorf("open leg (O_DIRECT): %w", err)
		}
	}
	return l, nil
}

func (l *fileLeg) Name() string { return l.name }
func (l *fileLeg) Size() int64  { return l.size }

// BlockSize is the device's logical block size; a regular file takes any
// alignment (unaligned I/O bypasses O_DIRECT) and reports 512.
func (l *fileLeg) BlockSize() int { return max(l.block, minBlockSize) }

// alignedPool holds 4096-aligned buffers of one size class for O_DIRECT.
type alignedPool struct{ pools sync.Map } // size -> *sync.Pool

func alignedBuf(n int) []byte {
	b := make([]byte, n+blockBytes)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (blockBytes - 1))
	if off != 0 {
		off = blockBytes - off
	}
	return b[off : off+n : off+n]
}

func (p *alignedPool) get(n int) *[]byte {
	v, _ := p.pools.LoadOrStore(n, &sync.Pool{New: func() any { b := alignedBuf(n); return &b }})
	return v.(*sync.Pool).Get().(*[]byte)
}

func (p *alignedPool) put(b *[]byte) {
	if v, ok := p.pools.Load(len(*b)); ok {
		v.(*sync.Pool).Put(b)
	}
}

func isAligned(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))&(blockBytes-1) == 0
}

// useDirect reports whether an I/O of n bytes at off can go through O_DIRECT.
func (l *fileLeg) useDirect(off int64, n int) bool {
	return l.direct != nil && off%blockBytes == 0 && n%blockBytes == 0 && n > 0
}

const maxBounce = 8 << 20 // larger unaligned-buffer I/O is split

func (l *fileLeg) ReadAt(p []byte, off int64) error {
	if err := l.check(off, int64(len(p))); err != nil {
		return err
	}
	if !l.useDirect(off, len(p)) {
		return l.readFull(l.buf, p, off)
	}
	if isAligned(p) {
		return l.readFull(l.direct, p, off)
	}
	for len(p) > 0 {
		n := min(len(p), maxBounce)
		bp := l.pool.get(n)
		err := l.readFull(l.direct, *bp, off)
		copy(p, *bp)
		l.pool.put(bp)
		if err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (l *fileLeg) readFull(f *os.File, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := f.ReadAt(p, off)
		if n == 0 && err != nil {
			return fmt.Errorf("read %s at %d: %w", l.name, off, err)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (l *fileLeg) check(off, n int64) error {
	if off < 0 || n < 0 || off+n > l.size {
		return fmt.Errorf("%s: I/O [%d, +%d) outside the leg's %d bytes", l.name, off, n, l.size)
	}
	return nil
}

func (l *fileLeg) WriteAt(p []byte, off int64, fua bool) error {
	if err := l.check(off, int64(len(p))); err != nil {
		return err
	}
	if !l.useDirect(off, len(p)) {
		return l.writeFull(l.buf, p, off, fua)
	}
	if isAligned(p) {
		return l.writeFull(l.direct, p, off, fua)
	}
	for len(p) > 0 {
		n := min(len(p), maxBounce)
		bp := l.pool.get(n)
		copy(*bp, p[:n])
		err := l.writeFull(l.direct, *bp, off, fua)
		l.pool.put(bp)
		if err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (l *fileLeg) writeFull(f *os.File, p []byte, off int64, fua bool) error {
	flags := 0
	if fua {
		flags = unix.RWF_DSYNC
	}
	fd := int(f.Fd())
	for len(p) > 0 {
		var n int
		var err error
		if flags == 0 {
			n, err = unix.Pwrite(fd, p, off)
		} else {
			n, err = unix.Pwritev2(fd, [][]byte{p}, off, flags)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) && fua {
				// Kernel without RWF_DSYNC: write, then fdatasync.
				if _, err := f.WriteAt(p, off); err != nil {
					return fmt.Errorf("write %s at %d: %w", l.name, off, err)
				}
				return l.Flush()
			}
			return fmt.Errorf("write %s at %d: %w", l.name, off, err)
		}
		if n == 0 {
			return fmt.Errorf("write %s at %d: %w", l.name, off, io.ErrShortWrite)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (l *fileLeg) Flush() error {
	f := l.buf
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("flush %s: %w", l.name, err)
		}
		return nil
	}
}

func (l *fileLeg) Zero(off, length int64, unmap bool) error {
	if err := l.check(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	mode := uint32(unix.FALLOC_FL_ZERO_RANGE)
	if unmap {
		mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	}
	err := unix.Fallocate(int(l.buf.Fd()), mode, off, length)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("zero %s [%d, +%d): %w", l.name, off, length, err)
	}
	// No fallocate support: write zeros.
	z := alignedBuf(int(min(length, 1<<20)))
	for length > 0 {
		n := min(length, int64(len(z)))
		if err := l.WriteAt(z[:n], off, false); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

func (l *fileLeg) Close() error {
	var err error
	if l.direct != nil {
		err = l.direct.Close()
	}
	if e := l.buf.Close(); err == nil {
		err = e
	}
	return err
}
