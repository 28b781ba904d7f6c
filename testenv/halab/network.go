package halab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/hamirror/hamirror/testenv/hblab"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// buildNetworks makes the switch namespace (one bridge per network), the
// SAN and client namespaces and each node's network namespace, and cables
// them. A cable is a veth pair whose switch end is a bridge port: cutting
// it sets that port down, as pulling the plug at the switch would.
func (l *Lab) buildNetworks() error {
	sw, san, cl := l.ns("sw"), l.ns("san"), l.ns("client")
	cmds := [][]string{}
	for _, ns := range []string{sw, san, cl, l.ns("n1"), l.ns("n2")} {
		cmds = append(cmds, []string{"ip", "netns", "add", ns}, []string{"ip", "-n", ns, "link", "set", "lo", "up"})
	}
	for _, br := range []string{"pub", "priv1", "priv2"} {
		cmds = append(cmds, []string{"ip", "-n", sw, "link", "add", br, "type", "bridge"}, []string{"ip", "-n", sw, "link", "set", br, "up"})
	}
	// The SAN's switch lives in the SAN namespace; the arrays' portals are
	// addresses of that bridge.
	cmds = append(cmds, []string{"ip", "-n", san, "link", "add", "san", "type", "bridge"},
		[]string{"ip", "-n", san, "link", "set", "san", "up"})
	for i := range max(l.opt.Arrays, 0) {
		cmds = append(cmds, []string{"ip", "-n", san, "addr", "add", fmt.Sprintf("10.30.0.%d/24", i+1), "dev", "san"})
	}
	cmds = append(cmds, cable(sw, "pub", "clpub", cl, PublicNIC, ClientAddr+"/24")...)
	for i := 1; i <= 2; i++ {
		id, ns := fmt.Sprintf("n%d", i), l.ns(fmt.Sprintf("n%d", i))
		nics := nodeNICs(i)
		cmds = append(cmds, cable(sw, "pub", id+"pub", ns, PublicNIC, nics[PublicNIC])...)
		cmds = append(cmds, cable(sw, "priv1", id+"p1", ns, PrivateNIC1, nics[PrivateNIC1])...)
		cmds = append(cmds, cable(sw, "priv2", id+"p2", ns, PrivateNIC2, nics[PrivateNIC2])...)
		cmds = append(cmds, cable(san, "san", id+"san", ns, ISCSINIC, nics[ISCSINIC])...)
	}
	for _, c := range cmds {
		if err := run(c...); err != nil {
			return err
		}
	}
	return nil
}

// nodeNICs maps node i's interfaces to their own addresses (CIDR).
func nodeNICs(i int) map[string]string {
	return map[string]string{
		PublicNIC:   fmt.Sprintf("10.20.0.%d/24", i),
		PrivateNIC1: fmt.Sprintf("10.21.0.%d/24", i),
		PrivateNIC2: fmt.Sprintf("10.22.0.%d/24", i),
		ISCSINIC:    fmt.Sprintf("10.30.0.%d/24", 10+i),
	}
}

// cable links a port of bridge br in namespace swns to interface nic (with
// address addr) in namespace ns.
func cable(swns, br, port, ns, nic, addr string) [][]string {
	return [][]string{
		{"ip", "-n", swns, "link", "add", port, "type", "veth", "peer", "name", nic, "netns", ns},
		{"ip", "-n", swns, "link", "set", port, "master", br, "up"},
		{"ip", "-n", ns, "addr", "add", addr, "dev", nic},
		{"ip", "-n", ns, "link", "set", nic, "up"},
	}
}

// port returns the namespace and switch-side port of node id's cable.
func (l *Lab) port(id string, link Link) (ns, port string, err error) {
	switch link {
	case LinkPublic:
		return l.ns("sw"), id + "pub", nil
	case LinkPrivate1:
		return l.ns("sw"), id + "p1", nil
	case LinkPrivate2:
		return l.ns("sw"), id + "p2", nil
	case LinkISCSI:
		return l.ns("san"), id + "san", nil
	}
	return "", "", fmt.Errorf("halab: no link %q (public, private1, private2, iscsi)", link)
}

// CutLink pulls (cut=true) or plugs back node id's cable at the switch.
func (l *Lab) CutLink(id string, link Link, cut bool) error {
	ns, port, err := l.port(id, link)
	if err != nil {
		return err
	}
	return setPorts(ns, []string{port}, !cut)
}

// setLinks cuts or plugs every cable of node id, public first, in one
// netlink request each from this process, so a crash cuts them all within
// a millisecond.
func (l *Lab) setLinks(id string, cut bool) error {
	batch := map[string][]string{}
	var order []string
	for _, lk := range NodeLinks() {
		ns, port, _ := l.port(id, lk)
		if _, ok := batch[ns]; !ok {
			order = append(order, ns)
		}
		batch[ns] = append(batch[ns], port)
	}
	var errs []error
	for _, ns := range order {
		errs = append(errs, setPorts(ns, batch[ns], !cut))
	}
	return errors.Join(errs...)
}

// DialClient opens a TCP connection from the client namespace.
func (l *Lab) DialClient(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	return DialIn(ctx, l.ns("client"), addr, timeout)
}

// DialIn opens a TCP connection from network namespace ns; the socket stays
// in ns for its whole life.
func DialIn(ctx context.Context, ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := hblab.InNetns(ns, func() error {
		var err error
		d := net.Dialer{Timeout: timeout}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// HasAddr reports whether node id's namespace holds address ip right now
// (a VIP watcher's probe).
func (l *Lab) HasAddr(id, ip string) (bool, error) {
	found := false
	err := hblab.InNetns(l.ns(id), func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok && p.IP.String() == ip {
				found = true
			}
		}
		return nil
	})
	return found, err
}

// setPorts sets the named interfaces of network namespace ns up or down
// with one rtnetlink request each, from this process: a crash cuts every
// cable within a millisecond, where running ip(8) per namespace would take
// tens of milliseconds on a loaded host.
func setPorts(ns string, ports []string, up bool) error {
	f, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		return fmt.Errorf("rtnetlink in %s: %w", ns, err)
	}
	defer c.Close()
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	for _, port := range ports {
		// struct ifinfomsg: family, pad, type, index 0 (find by name),
		// flags, change mask; then IFLA_IFNAME.
		body := make([]byte, 16)
		binary.NativeEndian.PutUint32(body[8:], flags)
		binary.NativeEndian.PutUint32(body[12:], unix.IFF_UP)
		ae := netlink.NewAttributeEncoder()
		ae.String(unix.IFLA_IFNAME, port)
		attrs, err := ae.Encode()
		if err != nil {
			return err
		}
		_, err = c.Execute(netlink.Message{
			Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: netlink.Request | netlink.Acknowledge},
			Data:   append(body, attrs...),
		})
		if err != nil {
			return fmt.Errorf("setting %s %s in %s: %w", port, map[bool]string{true: "up", false: "down"}[up], ns, err)
		}
	}
	return nil
}
