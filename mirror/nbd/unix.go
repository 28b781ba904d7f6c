package nbd

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenUnix0600 creates a unix socket at path that only its owner can
// connect to: the socket gets mode 0600 before bind creates its file
// (Linux creates the file with the socket's own mode, less the umask), so
// the file never exists with a wider mode. The process umask is left
// alone: it is shared by every goroutine and by every child a goroutine
// starts meanwhile, and two goroutines that each set and restore it can
// leave it set for good (then a mkdir anywhere in the process makes a
// folder its owner cannot enter).
func ListenUnix0600(path string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.Fchmod(int(fd), 0o600) }); cerr != nil {
			return cerr
		}
		return err
	}}
	return lc.Listen(context.Background(), "unix", path)
}
