package agents

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// announcer tells the neighbours on one segment that an address now
// lives at this interface's MAC address: a gratuitous ARP (an RFC 5227
// announcement: an ARP request whose sender and target are both the
// address) for IPv4, an unsolicited neighbour advertisement with the
// override flag to all nodes (RFC 4861 7.2.6) for IPv6. Neighbours that
// hold an entry for the address replace the old MAC at once instead of
// waiting for it to go stale. Its socket is opened by newAnnouncer, in
// the caller's network namespace.
type announcer struct {
	ifi  *net.Interface
	addr netip.Addr
	arp  *arp.Client
	ndp  *ipv6.PacketConn

	once sync.Once
	quit chan struct{}
	done chan struct{} // closed when repeat has returned (and closed the socket)
}

func newAnnouncer(ifi *net.Interface, addr netip.Addr) (*announcer, error) {
	an := &announcer{ifi: ifi, addr: addr, quit: make(chan struct{}), done: make(chan struct{})}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %s has no Ethernet address (%v): neighbours cannot be told", ifi.Name, ifi.HardwareAddr)
	}
	var err error
	if addr.Is4() {
		an.arp, err = arp.Dial(ifi)
	} else {
		an.ndp, err = listenICMPv6(ifi, addr)
	}
	if err != nil {
		return nil, err
	}
	return an, nil
}

// listenICMPv6 opens the socket for neighbour advertisements, bound to
// the address itself: an advertisement's source is the address it
// announces, as the kernel's own are. The interface is given by index
// only (ndp.Conn names it, and Go resolves names through a process-wide
// cache that does not know network namespaces).
func listenICMPv6(ifi *net.Interface, addr netip.Addr) (*ipv6.PacketConn, error) {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", addr.String())
	if err != nil {
		return nil, err
	}
	pc := c.IPv6PacketConn()
	err = errors.Join(
		pc.SetHopLimit(ndp.HopLimit), // RFC 4861: 255, or receivers drop it
		pc.SetMulticastHopLimit(ndp.HopLimit),
		pc.SetChecksum(true, 2),
		pc.SetMulticastInterface(ifi),
	)
	if err != nil {
		c.Close()
		return nil, err
	}
	return pc, nil
}

// send sends one announcement.
func (an *announcer) send() error {
	if an.arp != nil {
		zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
		p, err := arp.NewPacket(arp.OperationRequest, an.ifi.HardwareAddr, an.addr, zero, an.addr)
		if err != nil {
			return err
		}
		return an.arp.WriteTo(p, ethernet.Broadcast)
	}
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: an.addr,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: an.ifi.HardwareAddr}},
	}
	b, err := ndp.MarshalMessage(na)
	if err != nil {
		return err
	}
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, Src: an.addr.AsSlice(), IfIndex: an.ifi.Index}
	_, err = an.ndp.WriteTo(b, cm, &net.IPAddr{IP: netip.IPv6LinkLocalAllNodes().AsSlice()})
	return err
}

func (an *announcer) close() error {
	if an.arp != nil {
		return an.arp.Close()
	}
	return an.ndp.Close()
}

// repeat sends n more announcements, interval apart, then closes the
// socket. A failed send is logged: the address is up already.
func (an *announcer) repeat(n int, interval time.Duration, log *slog.Logger) {
	defer close(an.done)
	defer an.close()
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; i < n; i++ {
		select {
		case <-an.quit:
			return
		case <-t.C:
		}
		if err := an.send(); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Warn("announcing the virtual IP failed", "address", an.addr.String(), "interface", an.ifi.Name, "err", err)
		}
	}
}

// stop ends the repeats and waits for the socket to be closed. A nil
// announcer is stopped already.
func (an *announcer) stop() {
	if an == nil {
		return
	}
	an.once.Do(func() { close(an.quit) })
	<-an.done
}
