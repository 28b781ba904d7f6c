package agents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hamirror/hamirror/resources"
)

// Announcement defaults. A single gratuitous ARP or unsolicited
// neighbour advertisement can be lost, and a switch port or a peer that
// is still settling (MAC learning, a bond failing over) may miss the
// first; five, 200 ms apart, span about a second, which covers those
// without flooding the segment (the same as Pacemaker's IPaddr2).
const (
	defaultAnnounceCount    = 5
	defaultAnnounceInterval = 200 * time.Millisecond
)

// vipAgent holds a virtual (service) IP address on an interface.
//
//	type: vip
//	address: 192.0.2.10/24         # CIDR, IPv4 or IPv6
//	interface: eth1
//	label: eth1:vip                # optional, IPv4 only, must start with the interface name
//	announce_count: 5              # gratuitous ARPs / unsolicited neighbour advertisements
//	announce_interval: 200ms
//
// Start adds the address with netlink (an IPv6 address without duplicate
// address detection: DAD would hold it unusable for a second or more,
// and on a takeover the old holder has been fenced), sends the first
// announcement before it returns and the rest in the background (Stop
// ends them). Monitor: nil while the address is on the interface and the
// link is up with carrier; resources.ErrNotRunning when the address is
// not there. With Env.CarrierGrace (the node has ping targets and counts
// a lost carrier on this interface as reaching none of them), a lost
// carrier is first the node's health, not this resource's failure: the
// monitor logs it and returns nil, the node hands the group to a peer
// that still reaches its targets, and no failure count keeps this node
// out once the cable is back. Only a carrier still lost after the grace
// (no peer reached more targets: they are down, or the peer's cable is
// out too) fails the monitor, as it does at once without ping targets.
// Start refuses a link without carrier either way. Stop removes it. The agent works in the network namespace
// of the thread that calls it; the announcements' sockets are opened in
// Start, so they stay in that namespace.
type vipAgent struct {
	name     string
	prefix   netip.Prefix
	ifname   string
	label    string
	count    int
	interval time.Duration
	log      *slog.Logger

	carrierGrace time.Duration // Env.CarrierGrace

	mu          sync.Mutex
	announce    *announcer // the background announcements of the last Start, if any
	carrierLost time.Time  // when a monitor first saw the link without carrier (zero: it has it)
}

func newVIP(name string, p *params, env Env) (resources.Agent, error) {
	a := &vipAgent{name: name, log: env.Log, carrierGrace: env.CarrierGrace}
	addr := p.str("address", true, "")
	a.ifname = p.str("interface", true, "")
	a.label = p.str("label", false, "")
	a.count = p.integer("announce_count", defaultAnnounceCount, 1, 100)
	a.interval = p.duration("announce_interval", defaultAnnounceInterval, 10*time.Millisecond, 10*time.Second)
	if addr != "" {
		pfx, err := netip.ParsePrefix(addr)
		switch {
		case err != nil:
			p.fail("address", "must be an address with its prefix length, such as 192.0.2.10/24 or 2001:db8::10/64: %v", err)
		case pfx.Addr().Zone() != "":
			p.fail("address", "must not carry a zone (%q): name the interface in interface", addr)
		case pfx.Addr().IsUnspecified() || pfx.Addr().IsMulticast():
			p.fail("address", "%s is not a unicast address", pfx.Addr())
		case pfx.Addr().Is4In6():
			p.fail("address", "write the IPv4 address %s as such, not IPv4-mapped", pfx.Addr().Unmap())
		default:
			a.prefix = pfx
		}
	}
	if a.ifname != "" && (len(a.ifname) >= unix.IFNAMSIZ || strings.ContainsAny(a.ifname, "/ \t\n:")) {
		p.fail("interface", "%q is not a valid interface name", a.ifname)
	}
	if a.label != "" {
		switch {
		case a.prefix.IsValid() && !a.prefix.Addr().Is4():
			p.fail("label", "labels exist only for IPv4 addresses")
		case len(a.label) >= unix.IFNAMSIZ:
			p.fail("label", "must be shorter than %d bytes, got %q", unix.IFNAMSIZ, a.label)
		case !strings.HasPrefix(a.label, a.ifname):
			p.fail("label", "must start with the interface name %q (like %s:vip), got %q", a.ifname, a.ifname, a.label)
		}
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *vipAgent) family() int {
	if a.prefix.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// find reports whether the address is on the link, and the name of
// another link that holds it, if any.
func (a *vipAgent) find(link netlink.Link) (here bool, elsewhere string, err error) {
	addrs, err := netlink.AddrList(nil, a.family())
	if err != nil {
		return false, "", fmt.Errorf("vip %s: listing addresses: %w", a.name, err)
	}
	for _, x := range addrs {
		ip, ok := netip.AddrFromSlice(x.IP)
		if !ok || ip.Unmap() != a.prefix.Addr().Unmap() {
			continue
		}
		if link != nil && x.LinkIndex == link.Attrs().Index {
			here = true
		} else if l, err := netlink.LinkByIndex(x.LinkIndex); err == nil {
			elsewhere = l.Attrs().Name
		} else {
			elsewhere = fmt.Sprintf("interface #%d", x.LinkIndex)
		}
	}
	return here, elsewhere, nil
}

func (a *vipAgent) link() (netlink.Link, error) {
	l, err := netlink.LinkByName(a.ifname)
	if err != nil {
		return nil, fmt.Errorf("vip %s: interface %s: %w (check the vip's interface and that the NIC is present)", a.name, a.ifname, err)
	}
	return l, nil
}

// linkUp says why the link cannot carry the address, or nil.
func (a *vipAgent) linkUp(l netlink.Link) error {
	at := l.Attrs()
	if at.Flags&net.FlagUp == 0 {
		return fmt.Errorf("vip %s: interface %s is administratively down (ip link set %s up)", a.name, a.ifname, a.ifname)
	}
	if at.RawFlags&unix.IFF_LOWER_UP == 0 {
		return fmt.Errorf("vip %s: interface %s has no carrier (check its cable, switch port or peer)", a.name, a.ifname)
	}
	return nil
}

func (a *vipAgent) Monitor(ctx context.Context) error {
	l, err := a.link()
	if err != nil {
		return err
	}
	here, _, err := a.find(l)
	if err != nil {
		return err
	}
	if !here {
		a.resetCarrier()
		return fmt.Errorf("vip %s: %s is not on %s: %w", a.name, a.prefix.Addr(), a.ifname, resources.ErrNotRunning)
	}
	err = a.linkUp(l)
	if a.carrierGrace <= 0 {
		return err
	}
	noCarrier := err != nil && l.Attrs().Flags&net.FlagUp != 0
	now := time.Now()
	a.mu.Lock()
	since := a.carrierLost
	if noCarrier && since.IsZero() {
		a.carrierLost = now
	} else if !noCarrier {
		a.carrierLost = time.Time{}
	}
	a.mu.Unlock()
	switch {
	case noCarrier && since.IsZero():
		a.log.Warn("virtual IP's link has no carrier: the node's ping score is 0, a peer that reaches more ping targets takes the group over",
			"resource", a.name, "interface", a.ifname, "grace", a.carrierGrace)
		return nil
	case noCarrier && now.Sub(since) < a.carrierGrace:
		return nil
	case noCarrier:
		return fmt.Errorf("%w for %v: no peer reaching more ping targets took the group over", err, now.Sub(since).Round(time.Millisecond))
	case !since.IsZero() && err == nil:
		a.log.Info("virtual IP's link has its carrier again", "resource", a.name, "interface", a.ifname)
	}
	return err
}

// resetCarrier forgets a lost carrier: each Start and Stop begins a new
// episode, whose first monitor without carrier gets the whole grace.
func (a *vipAgent) resetCarrier() {
	a.mu.Lock()
	a.carrierLost = time.Time{}
	a.mu.Unlock()
}

// CarrierLink is the interface whose carrier the node's ping rounds
// require (heartbeat.Pinger.RequireCarrier).
func (a *vipAgent) CarrierLink() string { return a.ifname }

func (a *vipAgent) Start(ctx context.Context) error {
	a.resetCarrier()
	l, err := a.link()
	if err != nil {
		return err
	}
	if err := a.linkUp(l); err != nil {
		return err
	}
	here, elsewhere, err := a.find(l)
	if err != nil {
		return err
	}
	if elsewhere != "" {
		return fmt.Errorf("vip %s: %s is already on %s: remove it there (ip addr del %s dev %s) or fix the vip's interface",
			a.name, a.prefix.Addr(), elsewhere, a.prefix, elsewhere)
	}
	if here {
		return nil
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.prefix.Bits(), a.prefix.Addr().BitLen())}, Label: a.label}
	if !a.prefix.Addr().Is4() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("vip %s: adding %s to %s: %w", a.name, a.prefix, a.ifname, err)
	}
	a.log.Info("virtual IP added", "address", a.prefix.String(), "interface", a.ifname)
	return a.startAnnouncing(ctx, l)
}

func (a *vipAgent) startAnnouncing(ctx context.Context, l netlink.Link) error {
	ifi, err := net.InterfaceByIndex(l.Attrs().Index)
	if err != nil {
		return fmt.Errorf("vip %s: interface %s: %w", a.name, a.ifname, err)
	}
	an, err := newAnnouncer(ifi, a.prefix.Addr())
	if err != nil {
		return fmt.Errorf("vip %s: opening a socket to announce %s on %s: %w", a.name, a.prefix.Addr(), a.ifname, err)
	}
	if err := an.send(); err != nil {
		an.close()
		return fmt.Errorf("vip %s: announcing %s on %s (neighbours would keep the old MAC): %w", a.name, a.prefix.Addr(), a.ifname, err)
	}
	a.mu.Lock()
	old := a.announce
	a.announce = an
	a.mu.Unlock()
	old.stop()
	go an.repeat(a.count-1, a.interval, a.log)
	return nil
}

func (a *vipAgent) Stop(ctx context.Context) error {
	a.mu.Lock()
	an := a.announce
	a.announce = nil
	a.carrierLost = time.Time{} // see resetCarrier
	a.mu.Unlock()
	an.stop()
	l, err := netlink.LinkByName(a.ifname)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil // no interface, no address on it
		}
		return fmt.Errorf("vip %s: interface %s: %w", a.name, a.ifname, err)
	}
	here, _, err := a.find(l)
	if err != nil || !here {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.prefix.Bits(), a.prefix.Addr().BitLen())}}
	if err := netlink.AddrDel(l, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("vip %s: removing %s from %s: %w (remove it by hand: ip addr del %s dev %s)",
			a.name, a.prefix, a.ifname, err, a.prefix, a.ifname)
	}
	if here, _, err := a.find(l); err != nil || here {
		return errors.Join(err, fmt.Errorf("vip %s: %s is still on %s after removal", a.name, a.prefix.Addr(), a.ifname))
	}
	a.log.Info("virtual IP removed", "address", a.prefix.String(), "interface", a.ifname)
	return nil
}
