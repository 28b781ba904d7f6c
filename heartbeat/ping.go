package heartbeat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Pinger probes public-network targets with ICMP echo (IPv4, raw socket:
// needs root or CAP_NET_RAW), like Heartbeat's ping nodes for ipfail. Its
// score is the number of targets that answered in the last round.
type Pinger struct {
	conn    net.PacketConn
	targets []*net.IPAddr
	timeout time.Duration
	id      uint16
	seq     uint16

	links []string        // RequireCarrier's interfaces
	nl    *netlink.Handle // their network namespace's netlink, or nil
}

// NewPinger resolves targets and opens the raw ICMP socket (in the calling
// thread's network namespace); each round waits up to timeout for answers.
func NewPinger(targets []string, timeout time.Duration) (*Pinger, error) {
	p := &Pinger{timeout: timeout, id: uint16(time.Now().UnixNano())}
	for _, t := range targets {
		a, err := net.ResolveIPAddr("ip4", t)
		if err != nil {
			return nil, fmt.Errorf("ping target %q: %w", t, err)
		}
		p.targets = append(p.targets, a)
	}
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("ping: raw ICMP socket (needs root or CAP_NET_RAW): %w", err)
	}
	p.conn = c
	return p, nil
}

// RequireCarrier makes a round score 0 while one of the named interfaces
// (those the node's virtual IPs live on) has no carrier: a pulled public
// cable is then judged like unreachable targets, at the next round, even
// when the targets are reached through another interface; a peer that
// still reaches them takes the group over cleanly, and the node is an
// eligible standby again once the cable is back. It queries the calling
// thread's network namespace. Call it before the member runs.
func (p *Pinger) RequireCarrier(ifnames ...string) error {
	if len(ifnames) == 0 {
		return nil
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("ping: netlink for the public links' carrier: %w", err)
	}
	if p.nl != nil {
		p.nl.Close()
	}
	p.links, p.nl = append([]string(nil), ifnames...), h
	return nil
}

// Close releases the socket.
func (p *Pinger) Close() error {
	if p.nl != nil {
		p.nl.Close()
	}
	return p.conn.Close()
}

// carrier says which required link has no carrier, or nil.
func (p *Pinger) carrier() error {
	for _, name := range p.links {
		l, err := p.nl.LinkByName(name)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			// Not (yet) there: a resource of the group may create it;
			// the VIP's own start and monitor report a missing link.
			continue
		}
		if err != nil {
			return fmt.Errorf("ping: public link %s: %w", name, err)
		}
		if l.Attrs().RawFlags&unix.IFF_LOWER_UP == 0 {
			return fmt.Errorf("ping: public link %s has no carrier (check its cable, switch port or peer): score 0", name)
		}
	}
	return nil
}

// Round sends one echo request to every target and returns how many
// answered within the timeout; 0 and why while a RequireCarrier link has
// no carrier. Not safe for concurrent use.
func (p *Pinger) Round() (int, error) {
	if err := p.carrier(); err != nil {
		return 0, err
	}
	c := p.conn
	p.seq++
	var errs []error
	for _, t := range p.targets {
		if _, err := c.WriteTo(echoRequest(p.id, p.seq), t); err != nil {
			errs = append(errs, fmt.Errorf("ping %s: %w", t, err))
		}
	}
	got := map[string]bool{}
	deadline := time.Now().Add(p.timeout)
	buf := make([]byte, 1500)
	for len(got) < len(p.targets) {
		c.SetReadDeadline(deadline)
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			break
		}
		if isEchoReply(buf[:n], p.id, p.seq) {
			for _, t := range p.targets {
				if from.String() == t.String() {
					got[t.String()] = true
				}
			}
		}
	}
	if len(errs) == len(p.targets) && len(errs) > 0 {
		return 0, errs[0] // every send failed: say why once
	}
	return len(got), nil
}

func echoRequest(id, seq uint16) []byte {
	b := []byte{8, 0, 0, 0, 0, 0, 0, 0, 'h', 'a', 'm', 'i', 'r', 'r', 'o', 'r'}
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	binary.BigEndian.PutUint16(b[2:], icmpChecksum(b))
	return b
}

// isEchoReply checks an ICMP message (the raw ip4:icmp socket strips the
// IP header) for our echo reply.
func isEchoReply(b []byte, id, seq uint16) bool {
	return len(b) >= 8 && b[0] == 0 && b[1] == 0 &&
		binary.BigEndian.Uint16(b[4:]) == id && binary.BigEndian.Uint16(b[6:]) == seq
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
