package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Config describes a lab.
type Config struct {
	Dir   string       // where disks, sockets and console logs go (e.g. t.TempDir())
	Nodes []NodeConfig // the first two nodes' ttyS1 are linked
	Image *Image       // built by BuildImage; nil builds (or reuses) it from the cache
	// Deadline kills every VM when it passes (a hung scenario); zero for none.
	Deadline time.Time
	// BootTimeout bounds the wait for each VM's agent (default 90 s).
	BootTimeout time.Duration
	Logf        func(format string, args ...any) // progress messages; default none
}

// Lab is a set of running VMs and their networks.
type Lab struct {
	cfg   Config
	ns    *netns
	nodes []*Node
	Image *Image
	timer *time.Timer
	once  sync.Once
}

// Prerequisites returns why the lab cannot run here, or nil: it needs
// root (network namespaces, taps), qemu-system-x86_64, busybox-static,
// apt (or a cached kernel) and ldd.
func Prerequisites() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (for network namespaces and tap devices)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "busybox", "ip", "go", "ldd"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "/dev/net/tun")
	}
	if cache, err := CacheDir(); err != nil || newestCachedKernel(cache) == nil {
		for _, tool := range []string{"apt-get", "apt-cache", "dpkg"} { // to fetch the kernel once
			if _, err := exec.LookPath(tool); err != nil {
				missing = append(missing, tool+" (or a kernel already in the lab cache)")
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("QEMU lab needs %s (run make deps as root)", strings.Join(missing, ", "))
	}
	return nil
}

// Start builds what is missing, boots every node and waits until each
// VM's agent answers.
func Start(ctx context.Context, cfg Config) (*Lab, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 90 * time.Second
	}
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("lab: no nodes configured")
	}
	if err := Prerequisites(); err != nil {
		return nil, err
	}
	l := &Lab{cfg: cfg, Image: cfg.Image}
	if l.Image == nil {
		cache, err := CacheDir()
		if err != nil {
			return nil, err
		}
		if l.Image, err = BuildImage(ctx, cache, cfg.Logf); err != nil {
			return nil, err
		}
	}
	var names []string
	seen := map[string]bool{}
	for i, nc := range cfg.Nodes {
		if nc.Name == "" || len(nc.Name) > 6 || strings.ContainsAny(nc.Name, " /,=-") || seen[nc.Name] {
			return nil, fmt.Errorf("lab: node %d: name %q must be unique, 1-6 characters, no space / , = -", i, nc.Name)
		}
		seen[nc.Name] = true
		names = append(names, nc.Name)
		l.nodes = append(l.nodes, &Node{Name: nc.Name, Index: i, cfg: nc, dir: cfg.Dir})
	}
	var err error
	if l.ns, err = newNetns(ctx, names); err != nil {
		return nil, err
	}
	if !cfg.Deadline.IsZero() {
		l.timer = time.AfterFunc(time.Until(cfg.Deadline), func() {
			cfg.Logf("lab: deadline passed, killing every VM")
			l.stopAll()
		})
	}
	started := time.Now()
	for i, n := range l.nodes {
		serial := ""
		sock := cfg.Dir + "/serial-" + l.nodes[0].Name + ".sock"
		switch {
		case i == 0 && len(l.nodes) > 1:
			serial = "path=" + sock + ",server=on,wait=off"
		case i == 1:
			serial = "path=" + sock + ",server=off,reconnect=1"
		}
		if err := n.start(l.ns, l.Image, serial); err != nil {
			l.Close()
			return nil, err
		}
		if i == 0 && len(l.nodes) > 1 {
			waitForFile(sock, 10*time.Second)
		}
	}
	bctx, cancel := context.WithTimeout(ctx, cfg.BootTimeout)
	defer cancel()
	for _, n := range l.nodes {
		if err := n.waitReady(bctx, started); err != nil {
			l.Close()
			return nil, err
		}
		cfg.Logf("lab: %s booted in %v", n.Name, n.BootTime.Round(time.Millisecond))
	}
	return l, nil
}

func waitForFile(path string, d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
}

// Nodes returns the VMs in configuration order.
func (l *Lab) Nodes() []*Node { return l.nodes }

// Node returns the VM called name, or nil.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Netns is the name of the lab's network namespace (ip netns exec NAME ...).
func (l *Lab) Netns() string { return l.ns.name }

// Client runs argv on the host inside the lab's namespace, the client
// side of the public network (and the iSCSI network's host side), and
// returns its combined output.
func (l *Lab) Client(ctx context.Context, argv ...string) (string, error) {
	full := l.ns.command(argv...)
	out, err := exec.CommandContext(ctx, full[0], full[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

var arpReply = regexp.MustCompile(`reply from [0-9.]+ \[([0-9a-fA-F:]{17})\]`)

// WhoHas asks on the public network, from the client side, which MAC
// answers ARP for ip, and returns the name of the node owning that MAC
// (or the MAC itself if no node has it). A test watches a virtual IP move
// with it. An address nobody answers for is an error.
func (l *Lab) WhoHas(ctx context.Context, ip string) (string, error) {
	out, err := l.Client(ctx, "busybox", "arping", "-f", "-c", "3", "-w", "5", "-I", "br-"+string(NetPublic), ip)
	if err != nil {
		return "", fmt.Errorf("no ARP answer for %s on the public network: %w", ip, err)
	}
	m := arpReply.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no ARP answer for %s on the public network: %s", ip, out)
	}
	mac := strings.ToLower(m[1])
	for _, n := range l.nodes {
		if n.MAC(NetPublic) == mac {
			return n.Name, nil
		}
	}
	return mac, nil
}

// ClientCommand returns a command that runs argv inside the lab's
// namespace, for long-running host-side peers (e.g. tgtd on the iSCSI
// network's 10.77.3.254). The caller starts and stops it.
func (l *Lab) ClientCommand(ctx context.Context, argv ...string) *exec.Cmd {
	full := l.ns.command(argv...)
	return exec.CommandContext(ctx, full[0], full[1:]...)
}

func (l *Lab) stopAll() {
	var wg sync.WaitGroup
	for _, n := range l.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Stop() }()
	}
	wg.Wait()
}

// Close kills every VM and removes the namespace. Console logs stay in Dir.
func (l *Lab) Close() error {
	var err error
	l.once.Do(func() {
		if l.timer != nil {
			l.timer.Stop()
		}
		l.stopAll()
		if l.ns != nil {
			err = l.ns.close()
		}
	})
	return err
}
