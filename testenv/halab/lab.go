package halab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/testenv/hblab"
)

// Addresses of the lab's networks, the same in every lab (each lab has its
// own namespaces, so labs never see each other's addresses).
const (
	VIP        = "10.20.0.10" // the service address, on the public network
	ClientAddr = "10.20.0.100"
	PublicNet  = "10.20.0.0/24"
	// Interface names inside a node's namespace.
	PublicNIC   = "pub0"
	PrivateNIC1 = "priv1"
	PrivateNIC2 = "priv2"
	ISCSINIC    = "san0"
)

// Link names a node's cable, for CutLink.
type Link string

// The cables of each node.
const (
	LinkPublic   Link = "public"
	LinkPrivate1 Link = "private1"
	LinkPrivate2 Link = "private2"
	LinkISCSI    Link = "iscsi"
)

// NodeLinks lists every cable of a node, the public one first.
func NodeLinks() []Link { return []Link{LinkPublic, LinkPrivate1, LinkPrivate2, LinkISCSI} }

// Options shape a lab.
type Options struct {
	Name string // short tag in every name the lab creates (default "lab")
	// Arrays is the number of tgtd arrays in the SAN namespace (default 2;
	// -1 for none). Each has one target with one LUN of LUNSize bytes.
	Arrays  int
	LUNSize int64 // default 64 MiB
	// Private lists host directories each node sees as its own copy
	// (bind-mounted from the node's folder, first filled with a copy of the
	// host's contents): /etc/corosync, /var/lib/pacemaker, ... Paths that
	// do not exist on the host are left out.
	Private []string
	// Overlay lists host directories each node sees with the files of its
	// own folder added on top (a read-only overlayfs): a fence agent in
	// /usr/sbin, for example. Write the files with Node.Path before Start.
	Overlay []string
	Logf    func(format string, args ...any) // default: discard
	// Keep leaves the lab's folder (nodes' logs, LUN files) after Close,
	// for a look at what the daemons said; everything else goes.
	Keep bool
}

// Lab is one failover topology on this host: nodes n1 and n2, a SAN with
// tgtd arrays, two private links and a serial line between the nodes, and a
// public network with a client and the VIP. See the package doc.
type Lab struct {
	opt    Options
	prefix string
	Dir    string // the lab's folder (nodes' folders, LUN files, logs)

	nodes  []*Node
	arrays []*Array
	serial *hblab.SerialLine
	power  *powerSwitch

	nextID atomic.Int64 // the client loops' row keys, unique in the lab

	mu     sync.Mutex
	loops  []string // loop devices to detach
	closed bool
}

// Available reports why a lab cannot run here (nil: it can).
func Available() error {
	if err := hblab.Available(); err != nil {
		return err
	}
	for _, b := range []string{"nsenter", "unshare", "losetup", "mount", "bash"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not installed (util-linux): run make deps", b)
		}
	}
	return nil
}

// New builds the lab and boots both nodes (their namespaces run, with no
// daemon). On error everything built so far is removed.
func New(ctx context.Context, opt Options) (_ *Lab, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opt.Name == "" {
		opt.Name = "lab"
	}
	if opt.Arrays == 0 {
		opt.Arrays = 2
	}
	if opt.Arrays > 8 {
		return nil, errors.New("halab: at most 8 arrays")
	}
	if opt.LUNSize == 0 {
		opt.LUNSize = 64 << 20
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	sweepStale()
	l := &Lab{opt: opt, prefix: fmt.Sprintf("halab-%s-%d-%s", opt.Name, os.Getpid(), hex.EncodeToString(rnd[:]))}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if l.Dir, err = os.MkdirTemp("", l.prefix+"-"); err != nil {
		return nil, err
	}
	// Daemons in the nodes run as other users (postgres, hacluster) and
	// must reach their folders below this one.
	if err := os.Chmod(l.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := l.buildNetworks(); err != nil {
		return nil, err
	}
	if l.serial, err = hblab.NewSerialLine(); err != nil {
		return nil, err
	}
	if l.power, err = startPowerSwitch(l); err != nil {
		return nil, err
	}
	for i := 1; i <= 2; i++ {
		n, err := l.newNode(i, l.serial.Ends()[i-1])
		if err != nil {
			return nil, err
		}
		l.nodes = append(l.nodes, n)
	}
	if opt.Arrays > 0 {
		if err := l.startArrays(opt.Arrays); err != nil {
			return nil, err
		}
	}
	for _, n := range l.nodes {
		if err := n.Start(ctx); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// ns names one of the lab's network namespaces.
func (l *Lab) ns(role string) string { return l.prefix + "-" + role }

// Netns returns the network namespace of role: "n1", "n2", "client", "san"
// or "sw" (the switches).
func (l *Lab) Netns(role string) string { return l.ns(role) }

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

// CutSerial cuts or mends the serial cable between the nodes.
func (l *Lab) CutSerial(cut bool) { l.serial.Cut(cut) }

// Node returns node "n1" or "n2" (nil for another name).
func (l *Lab) Node(id string) *Node {
	for _, n := range l.nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Nodes returns both nodes.
func (l *Lab) Nodes() []*Node { return append([]*Node(nil), l.nodes...) }

// Peer returns the other node's ID.
func Peer(id string) string {
	if id == "n1" {
		return "n2"
	}
	return "n1"
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

// LoopDevice makes a file of size bytes in the lab's folder and a loop
// device on it, detached by Close. Both nodes see the same device (the
// host's /dev), as two servers see one SAN LUN; mounting it in both nodes
// at once shares one kernel superblock (see the package doc).
func (l *Lab) LoopDevice(name string, size int64) (string, error) {
	path := filepath.Join(l.Dir, name+".img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return "", err
	}
	if err := os.Truncate(path, size); err != nil {
		return "", err
	}
	out, err := exec.Command("losetup", "-f", "--show", path).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup -f --show %s: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	l.mu.Lock()
	l.loops = append(l.loops, dev)
	l.mu.Unlock()
	return dev, nil
}

// Close stops every node (their processes are killed and reaped), the
// arrays and the power switch, detaches loop devices and deletes the
// namespaces and the lab's folder. Safe to call twice and after a failed
// New; it returns what it could not remove.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	var errs []error
	if l.power != nil {
		l.power.stop()
	}
	for _, n := range l.nodes {
		if err := n.halt(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range l.arrays {
		if err := a.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if l.serial != nil {
		l.serial.Close()
	}
	for _, dev := range l.loops {
		if err := detachLoop(dev); err != nil {
			errs = append(errs, err)
		}
	}
	for _, role := range []string{"n1", "n2", "client", "san", "sw"} {
		if _, err := os.Stat("/var/run/netns/" + l.ns(role)); err == nil {
			if err := run("ip", "netns", "del", l.ns(role)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if l.Dir != "" && l.opt.Keep {
		// The marker keeps the sweep of a later lab away from it.
		os.WriteFile(filepath.Join(l.Dir, "KEPT"), nil, 0o644)
		l.opt.Logf("lab folder kept: %s", l.Dir)
	} else if l.Dir != "" {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// detachLoop detaches dev. A filesystem a dead node had mounted is released
// by the kernel shortly after its mount namespace died; until then the
// device is busy, so detach retries for a while.
func detachLoop(dev string) error {
	var err error
	for range 50 {
		if err = run("losetup", "-d", dev); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// sweepStale removes what labs whose process died before its cleanup ran
// (a test binary killed by its timeout) left: the processes still running
// in their namespaces (tgtd, node PID 1s: they outlive their parent), the
// namespaces, loop devices on their files and their folders. Only names
// halab-NAME-PID-RAND-... of dead PIDs are touched.
func sweepStale() {
	for _, ns := range hblab.StaleNetns("halab") {
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		run("ip", "netns", "del", ns)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "halab-*"))
	for _, d := range dirs {
		f := strings.Split(filepath.Base(d), "-")
		if len(f) < 5 {
			continue
		}
		pid, err := strconv.Atoi(f[len(f)-3])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !os.IsNotExist(err) {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "KEPT")); err == nil {
			continue
		}
		if out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").Output(); err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], d+"/") {
					run("losetup", "-d", f[0])
				}
			}
		}
		os.RemoveAll(d)
	}
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
