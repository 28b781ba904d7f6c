package iscsi

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// nbWriter writes to a socket without ever blocking: it is how the reader
// sends the commands its completions started (see outq.releaseWriting).
// A connection that is no syscall.Conn (net.Pipe in tests) takes nothing,
// and everything goes to the helper writer.
type nbWriter struct {
	rc   syscall.RawConn // nil: cannot write without blocking
	iovs [][]byte        // scratch for one writev
}

func newNBWriter(c net.Conn) *nbWriter {
	w := &nbWriter{}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			w.rc = rc
		}
	}
	return w
}

// maxIOV is the most buffers one writev takes (Linux's IOV_MAX is 1024).
const maxIOV = 1024

// writeNonBlocking writes a prefix of bufs with writev until the socket
// would block, and returns what is left (nil when all was written).
func (w *nbWriter) writeNonBlocking(bufs net.Buffers) (net.Buffers, error) {
	if w.rc == nil {
		return bufs, nil
	}
	for len(bufs) > 0 {
		w.iovs = append(w.iovs[:0], bufs[:min(len(bufs), maxIOV)]...)
		var n int
		var werr error
		err := w.rc.Write(func(fd uintptr) bool {
			for {
				n, werr = unix.Writev(int(fd), w.iovs)
				if werr != unix.EINTR {
					return true // never wait for the socket: the helper does
				}
			}
		})
		clear(w.iovs)
		if err != nil {
			return bufs, err
		}
		if errors.Is(werr, unix.EAGAIN) {
			return bufs, nil
		}
		if werr != nil {
			return bufs, werr
		}
		bufs = consume(bufs, n)
		if n == 0 {
			return bufs, nil
		}
	}
	return nil, nil
}

// consume drops the first n bytes of bufs.
func consume(bufs net.Buffers, n int) net.Buffers {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}
