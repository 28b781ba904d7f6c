package agents

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// segment is a test Ethernet segment: a client namespace whose bridge
// br0 has one port per node namespace (eth0 in each), addresses
// 10.222.0.1/24 and fd00:222::1/64 on the bridge. Names carry the
// branch, the pid and a random suffix; Cleanup deletes only them.
type segment struct {
	client string
	nodes  []string
}

func needNetns(t *testing.T) {
	t.Helper()
	needRoot(t)
	needTool(t, "ip", "iproute2")
	needTool(t, "ping", "iputils-ping")
}

func nsName(role string) string {
	b := make([]byte, 3)
	rand.Read(b)
	return fmt.Sprintf("agents-%d-%s-%s", os.Getpid(), hex.EncodeToString(b), role)
}

func newSegment(t *testing.T, nodes int) *segment {
	t.Helper()
	needNetns(t)
	s := &segment{client: nsName("c")}
	addNS := func(ns string) {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		// No duplicate address detection on the test links: their
		// link-local addresses are usable at once.
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	addNS(s.client)
	sh(t, "ip", "-n", s.client, "link", "add", "br0", "type", "bridge")
	for i := range nodes {
		ns := nsName(fmt.Sprintf("n%d", i))
		addNS(ns)
		port := fmt.Sprintf("p%d", i)
		sh(t, "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", s.client)
		sh(t, "ip", "-n", s.client, "link", "set", port, "master", "br0", "up")
		sh(t, "ip", "-n", ns, "addr", "add", fmt.Sprintf("10.222.0.%d/24", 11+i), "dev", "eth0")
		sh(t, "ip", "-n", ns, "addr", "add", fmt.Sprintf("fd00:222::%d/64", 11+i), "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		s.nodes = append(s.nodes, ns)
	}
	sh(t, "ip", "-n", s.client, "addr", "add", "10.222.0.1/24", "dev", "br0")
	sh(t, "ip", "-n", s.client, "addr", "add", "fd00:222::1/64", "dev", "br0")
	sh(t, "ip", "-n", s.client, "link", "set", "br0", "up")
	// IPv6 takes the links up a moment later (a bridge gets its carrier
	// from its ports): until the multicast route exists, neighbour
	// advertisements to all nodes are dropped as unroutable.
	for _, x := range append([]string{s.client + " br0"}, s.nodes...) {
		ns, dev, _ := strings.Cut(x, " ")
		if dev == "" {
			dev = "eth0"
		}
		waitFor(t, 10*time.Second, "IPv6 on "+dev+" in "+ns, func() bool {
			out, _ := exec.Command("ip", "-n", ns, "-6", "route", "show", "table", "local").Output()
			return strings.Contains(string(out), "ff00::/8 dev "+dev+" ")
		})
	}
	return s
}

// mac returns the MAC address of ns's eth0.
func (s *segment) mac(t *testing.T, ns string) string {
	t.Helper()
	f := strings.Fields(sh(t, "ip", "-n", ns, "-o", "link", "show", "eth0"))
	for i, x := range f {
		if x == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC for eth0 in %s: %v", ns, f)
	return ""
}

// neigh returns the client's neighbour entry for ip: MAC and state.
func (s *segment) neigh(t *testing.T, ip string) (string, string) {
	t.Helper()
	f := strings.Fields(sh(t, "ip", "-n", s.client, "neigh", "show", ip))
	mac, state := "", ""
	for i, x := range f {
		if x == "lladdr" && i+1 < len(f) {
			mac = f[i+1]
		}
	}
	if len(f) > 0 {
		state = f[len(f)-1]
	}
	return mac, state
}

// inNetns runs fn on a thread switched into namespace ns, so the netlink
// calls, sockets and child processes it makes live there. The thread is
// retired afterwards (never unlocked), so no other goroutine runs in ns.
func inNetns(t *testing.T, ns string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
