package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// UDPLink is the heartbeat over one private NIC: a UDP socket bound to the
// NIC's address and, with SO_BINDTODEVICE, to the NIC itself, so a frame
// received on it proves that very NIC and cable work.
type UDPLink struct {
	medium string
	conn   *net.UDPConn
	peers  []*net.UDPAddr
}

// ListenUDP opens medium's socket on port, bound to iface with
// SO_BINDTODEVICE (or, without iface, to the address local), sending to
// every address in peers on the same port. It uses the calling thread's
// network namespace.
func ListenUDP(medium, iface, local string, port int, peers []string) (*UDPLink, error) {
	l := &UDPLink{medium: medium}
	for _, p := range peers {
		a, err := net.ResolveUDPAddr("udp4", net.JoinHostPort(p, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("heartbeat %s: peer address %q: %w", medium, p, err)
		}
		l.peers = append(l.peers, a)
	}
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if iface != "" {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
				if serr != nil {
					serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, serr)
					return
				}
			}
			// Heartbeats are tiny and urgent: ask for the interactive class.
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PRIORITY, 6)
		})
		return errors.Join(err, serr)
	}}
	// Bound to a NIC, the socket listens on every address of that NIC only:
	// mirrord then starts (and reports the medium down) even when the NIC
	// has no address yet at boot. Sockets on other NICs may share the port.
	bind := local
	if iface != "" {
		bind = ""
	}
	pc, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(bind, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("heartbeat %s on %s (%s): %w", medium, iface, local, err)
	}
	l.conn = pc.(*net.UDPConn)
	return l, nil
}

// Medium implements Link.
func (l *UDPLink) Medium() string { return l.medium }

// Send implements Link: one datagram per peer.
func (l *UDPLink) Send(frame []byte) error {
	var errs []error
	for _, a := range l.peers {
		if _, err := l.conn.WriteToUDP(frame, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Receive implements Link.
func (l *UDPLink) Receive() ([]byte, error) {
	buf := make([]byte, MaxFrame+1)
	for {
		n, _, err := l.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, ErrClosed
			}
			continue // e.g. ICMP port unreachable reported on the socket
		}
		return buf[:n:n], nil
	}
}

// Close implements Link.
func (l *UDPLink) Close() error { return l.conn.Close() }

// LocalAddr is the bound address.
func (l *UDPLink) LocalAddr() net.Addr { return l.conn.LocalAddr() }
