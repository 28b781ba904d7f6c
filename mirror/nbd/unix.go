package nbd

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// listenUnix0600 creates a unix socket that only its owner can connect to:
// the umask closes the window between bind and chmod.
func listenUnix0600(path string) (net.Listener, error) {
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
