package peers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// Keepalived moves the VIP alone with VRRP over the public network
// (Debian's keepalived 2.2). PostgreSQL runs on both nodes, independent of
// each other, so the same client loop works; it also shows what a VIP
// alone cannot do: the rows acknowledged by the dead node are not on the
// new one.
//
// Both nodes start as BACKUP with nopreempt (n1 with the higher priority,
// so it is the first master): a node that comes back does not take the VIP
// back, as with Pacemaker's stickiness and hamirror's default.
type Keepalived struct {
	halab.Faults
	// AdvertInt is "" for keepalived's defaults (VRRPv2, advert_int 1 s)
	// or a sub-second interval such as "0.01" (the minimum), which needs
	// vrrp_version 3: VRRPv2 rounds it up to 1 s.
	AdvertInt string

	pg, ka map[string]*halab.Daemon
}

// KeepalivedAvailable reports why keepalived cannot run here.
func KeepalivedAvailable() error {
	if _, err := exec.LookPath("keepalived"); err != nil {
		return errors.New("keepalived not installed: run make deps (apt package keepalived)")
	}
	return halab.PGAvailable()
}

// Name says which setting runs.
func (k *Keepalived) Name() string {
	if k.AdvertInt == "" {
		return "keepalived, defaults (VRRPv2, advert_int 1)"
	}
	return "keepalived, VRRPv3 advert_int " + k.AdvertInt
}

// Setup makes each node's database and configuration.
func (k *Keepalived) Setup(ctx context.Context, l *halab.Lab) error {
	if err := KeepalivedAvailable(); err != nil {
		return err
	}
	k.Lab = l
	k.pg, k.ka = map[string]*halab.Daemon{}, map[string]*halab.Daemon{}
	for _, n := range l.Nodes() {
		if err := halab.InitDB(ctx, pgData(n)); err != nil {
			return err
		}
		if err := os.WriteFile(k.confPath(n), []byte(k.config(n)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func pgData(n *halab.Node) string { return filepath.Join(n.Dir(), "pgdata") }

func (k *Keepalived) confPath(n *halab.Node) string { return filepath.Join(n.Dir(), "keepalived.conf") }

func (k *Keepalived) config(n *halab.Node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global_defs {\n    router_id %s\n", n.ID)
	if k.AdvertInt != "" {
		b.WriteString("    vrrp_version 3\n")
	}
	b.WriteString("}\n\nvrrp_instance VI_1 {\n    state BACKUP\n    nopreempt\n")
	fmt.Fprintf(&b, "    interface %s\n    virtual_router_id 51\n    priority %d\n", halab.PublicNIC, 200-50*n.Index)
	if k.AdvertInt != "" {
		fmt.Fprintf(&b, "    advert_int %s\n", k.AdvertInt)
	}
	fmt.Fprintf(&b, "    virtual_ipaddress {\n        %s/24 dev %s\n    }\n}\n", halab.VIP, halab.PublicNIC)
	return b.String()
}

// Start runs PostgreSQL on both nodes, then keepalived on n1 (which becomes
// master) and n2.
func (k *Keepalived) Start(ctx context.Context) error {
	for _, n := range k.Lab.Nodes() {
		if err := k.startPG(ctx, n); err != nil {
			return err
		}
	}
	for _, id := range []string{"n1", "n2"} {
		state := "MASTER"
		if id == "n2" {
			state = "BACKUP"
		}
		if err := k.startKeepalived(ctx, k.Lab.Node(id), state); err != nil {
			return err
		}
	}
	return k.Lab.WaitPG(ctx, net.JoinHostPort(halab.VIP, "5432"), 30*time.Second, nil)
}

func (k *Keepalived) startPG(ctx context.Context, n *halab.Node) error {
	d, err := n.StartPostgres(ctx, pgData(n))
	if err != nil {
		return err
	}
	k.pg[n.ID] = d
	return k.Lab.CreateLedger(ctx, net.JoinHostPort(n.Addr(), "5432"))
}

// startKeepalived starts keepalived on n and waits until it enters state.
func (k *Keepalived) startKeepalived(ctx context.Context, n *halab.Node, state string) error {
	log := filepath.Join(n.Dir(), "log", "keepalived.log")
	offset := fileSize(log)
	d, err := n.StartDaemon("keepalived", "keepalived", "-n", "-l", "-D", "-P", "-f", k.confPath(n),
		"-p", "/run/keepalived.pid", "-r", "/run/keepalived-vrrp.pid", "-c", "/run/keepalived-check.pid")
	if err != nil {
		return err
	}
	k.ka[n.ID] = d
	// With the default advert_int a backup waits 3 adverts and its skew
	// before becoming master: seconds.
	if err := waitLog(ctx, log, offset, "Entering "+state+" STATE", 20*time.Second); err != nil {
		return fmt.Errorf("%s: keepalived: %w", n.ID, err)
	}
	return nil
}

// Active is the node holding the VIP.
func (k *Keepalived) Active(context.Context) (string, error) { return vipHolder(k.Lab) }

// vipHolder names the one node holding the VIP.
func vipHolder(l *halab.Lab) (string, error) {
	var holders []string
	for _, n := range l.Nodes() {
		ok, err := l.HasAddr(n.ID, halab.VIP)
		if err != nil {
			return "", err
		}
		if ok {
			holders = append(holders, n.ID)
		}
	}
	if len(holders) != 1 {
		return "", fmt.Errorf("VIP held by %v, want exactly one node", holders)
	}
	return holders[0], nil
}

// Recover power-cycles node (whatever the fault left of it) and starts
// PostgreSQL and keepalived there as a backup.
func (k *Keepalived) Recover(ctx context.Context, node string) error {
	n := k.Lab.Node(node)
	if err := n.Crash(); err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	if err := k.startPG(ctx, n); err != nil {
		return err
	}
	return k.startKeepalived(ctx, n, "BACKUP")
}

// Breakdown: keepalived exposes nothing finer than the VIP's move, which
// the campaign measures for every system.
func (k *Keepalived) Breakdown(context.Context, time.Time, string) ([]halab.Phase, error) {
	return nil, nil
}

// Stop stops keepalived (which removes the VIP) and PostgreSQL.
func (k *Keepalived) Stop(context.Context) error {
	for _, d := range k.ka {
		d.Stop(5 * time.Second)
	}
	for _, d := range k.pg {
		d.Stop(10 * time.Second)
	}
	return nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// waitLog waits until the file at path holds want after offset.
func waitLog(ctx context.Context, path string, offset int64, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil && int64(len(b)) >= offset && strings.Contains(string(b[offset:]), want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q in %s within %v", want, path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
