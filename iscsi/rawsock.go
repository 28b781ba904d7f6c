package iscsi

import (
	"bufio"
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The session's reader reads and writes its socket through syscall.RawConn
// with raw system calls on the non-blocking descriptor, waiting in the
// netpoller only when the socket has nothing to read. A plain read or
// write goes through the runtime's entersyscall, which wakes the sysmon
// thread whenever it went to sleep (it does when all Ps are idle, which
// is every time a single event loop waits for the target): a futex wake
// per command, and in a VM a costly one. A raw call on a non-blocking
// descriptor never blocks, so it needs no entersyscall.

// rawReader reads from a connection's descriptor with raw read(2) calls;
// left is what a bufio.Reader had buffered before the switch.
type rawReader struct {
	rc   syscall.RawConn
	left []byte
	// One read's arguments and results, and the function RawConn.Read
	// runs (bound once, so a read allocates nothing).
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// sessionReader returns what a session's reader reads from: br's
// buffered bytes, then the connection read raw (or br itself when the
// connection has no descriptor, as net.Pipe in tests).
func sessionReader(nc net.Conn, br *bufio.Reader) io.Reader {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return br
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return br
	}
	r := &rawReader{rc: rc}
	r.fn = r.read
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		r.left = append([]byte(nil), b...)
	}
	return r
}

func (r *rawReader) Read(p []byte) (int, error) {
	if len(r.left) > 0 {
		n := copy(p, r.left)
		r.left = r.left[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.rc.Read(r.fn)
	r.p = nil
	n, errno := r.n, r.errno
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// read is one raw read(2) into r.p; false: wait in the netpoller.
func (r *rawReader) read(fd uintptr) bool {
	for {
		r1, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.n, r.errno = int(r1), e
		return true
	}
}

// nbWriter writes to a socket without ever blocking: it is how the reader
// sends the commands its completions started (see outq.releaseWriting).
// A connection that is no syscall.Conn (net.Pipe in tests) has none: the
// helper writer then writes everything.
type nbWriter struct {
	rc   syscall.RawConn
	iovs []unix.Iovec // scratch for one writev
	// One writev's results and the function RawConn.Write runs (bound
	// once, so a write allocates nothing).
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// newNBWriter returns nil for a connection without a descriptor.
func newNBWriter(c net.Conn) *nbWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &nbWriter{rc: rc}
	w.fn = w.writev
	return w
}

// maxIOV is the most buffers one writev takes (Linux's IOV_MAX is 1024).
const maxIOV = 1024

// writeNonBlocking writes a prefix of bufs with writev until the socket
// would block, and returns what is left (nil when all was written).
func (w *nbWriter) writeNonBlocking(bufs net.Buffers) (net.Buffers, error) {
	for len(bufs) > 0 {
		w.iovs = w.iovs[:0]
		for _, b := range bufs[:min(len(bufs), maxIOV)] {
			if len(b) > 0 {
				var v unix.Iovec
				v.Base = &b[0]
				v.SetLen(len(b))
				w.iovs = append(w.iovs, v)
			}
		}
		if len(w.iovs) == 0 {
			return consume(bufs, 0), nil
		}
		err := w.rc.Write(w.fn)
		n, errno := w.n, w.errno
		clear(w.iovs) // drop the references to the callers' buffers
		if err != nil {
			return bufs, err
		}
		if errno == unix.EAGAIN {
			return bufs, nil
		}
		if errno != 0 {
			return bufs, errno
		}
		bufs = consume(bufs, n)
		if n == 0 {
			return bufs, nil
		}
	}
	return nil, nil
}

// writev is one raw writev(2) of w.iovs; it never waits for the socket
// (the helper writer does).
func (w *nbWriter) writev(fd uintptr) bool {
	for {
		r1, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iovs[0])), uintptr(len(w.iovs)))
		if e != unix.EINTR {
			w.n, w.errno = int(r1), e
			return true
		}
	}
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
