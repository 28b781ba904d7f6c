package halab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
	// LUNDir is where the arrays' LUN files and LoopDevice's files go, in
	// a folder of the lab's own (default: the lab's folder, under
	// TMPDIR). A tmpfs there makes the arrays answer a flush from memory,
	// as an array's battery-backed cache does, instead of waiting for
	// this host's disk.
	LUNDir string
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
	lunDir string // the LUN files' folder: Dir, or one in Options.LUNDir

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
	sweepStale(opt.LUNDir)
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
	l.lunDir = l.Dir
	if opt.LUNDir != "" {
		if l.lunDir, err = os.MkdirTemp(opt.LUNDir, l.prefix+"-"); err != nil {
			return nil, err
		}
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

// LoopDevice makes a file of size bytes in the lab's folder and a loop
// device on it, detached by Close. Both nodes see the same device (the
// host's /dev), as two servers see one SAN LUN; mounting it in both nodes
// at once shares one kernel superblock (see the package doc).
func (l *Lab) LoopDevice(name string, size int64) (string, error) {
	path := filepath.Join(l.lunDir, name+".img")
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
	for _, n := range l.nodes {
		if err := n.loopsGone(10 * time.Second); err != nil {
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
	dirs := []string{l.Dir}
	if l.lunDir != l.Dir {
		dirs = append(dirs, l.lunDir)
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if l.opt.Keep {
			// The marker keeps the sweep of a later lab away from it.
			os.WriteFile(filepath.Join(d, "KEPT"), nil, 0o644)
			l.opt.Logf("lab folder kept: %s", d)
		} else if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
