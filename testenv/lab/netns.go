package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Net is one of a node's four networks (requirement R6).
type Net string

// The networks every node is attached to, in NIC order (eth0..eth3 before
// /init renames them to these names).
const (
	NetISCSI  Net = "iscsi"  // to the iSCSI arrays; the namespace side is 10.77.3.254
	NetPublic Net = "public" // clients and the virtual IP; the namespace side is 10.77.1.254
	NetPriv1  Net = "priv1"  // first private link between the nodes (heartbeat)
	NetPriv2  Net = "priv2"  // second private link between the nodes (heartbeat)
)

// Nets lists the networks in NIC order.
var Nets = []Net{NetISCSI, NetPublic, NetPriv1, NetPriv2}

// subnet is the third octet of a network's 10.77.X.0/24.
func subnet(n Net) int {
	switch n {
	case NetISCSI:
		return 3
	case NetPublic:
		return 1
	case NetPriv1:
		return 11
	default:
		return 12
	}
}

// ClientAddr is the namespace's own address on net (the "client" side of
// the public network, where tgtd will listen on the iSCSI network); empty
// for the private links, which only the nodes share.
func ClientAddr(n Net) string {
	if n == NetISCSI || n == NetPublic {
		return fmt.Sprintf("10.77.%d.254", subnet(n))
	}
	return ""
}

var nsSeq atomic.Int64

// netns is the network namespace holding the lab's bridges and taps.
type netns struct{ name string }

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// newNetns creates a namespace with one bridge per network, addresses on
// the iSCSI and public bridges, and taps for nodes named in taps.
func newNetns(ctx context.Context, nodes []string) (*netns, error) {
	removeStaleNetns(ctx)
	ns := &netns{name: fmt.Sprintf("hmlab-%d-%d", os.Getpid(), nsSeq.Add(1))}
	if err := ipCmd(ctx, "netns", "add", ns.name); err != nil {
		return nil, err
	}
	in := func(args ...string) error { return ipCmd(ctx, append([]string{"-n", ns.name}, args...)...) }
	steps := [][]string{{"link", "set", "lo", "up"}}
	for _, n := range Nets {
		br := "br-" + string(n)
		steps = append(steps, []string{"link", "add", br, "type", "bridge"}, []string{"link", "set", br, "up"})
		if a := ClientAddr(n); a != "" {
			steps = append(steps, []string{"addr", "add", a + "/24", "dev", br})
		}
		for _, node := range nodes {
			tap := tapName(node, n)
			steps = append(steps,
				[]string{"tuntap", "add", "dev", tap, "mode", "tap"},
				[]string{"link", "set", tap, "master", br},
				[]string{"link", "set", tap, "up"})
		}
	}
	for _, s := range steps {
		if err := in(s...); err != nil {
			ns.close()
			return nil, err
		}
	}
	return ns, nil
}

// tapName is the host side of node's NIC on net, unique inside the namespace.
func tapName(node string, n Net) string { return node + "-" + string(n) }

func (ns *netns) close() error {
	return ipCmd(context.Background(), "netns", "del", ns.name)
}

// command returns argv to run inside the namespace.
func (ns *netns) command(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns.name}, argv...)
}

// removeStaleNetns deletes lab namespaces left by processes that died.
func removeStaleNetns(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "hmlab-") {
			continue
		}
		parts := strings.Split(f[0], "-")
		if len(parts) != 3 {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = ipCmd(ctx, "netns", "del", f[0])
		}
	}
}
