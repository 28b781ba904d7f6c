package halab

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

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
