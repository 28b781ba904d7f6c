package peers

import (
	"context"
	_ "embed"
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

//go:embed fence_halab.sh
var fenceAgent string

// PacemakerPrivate are the folders each node keeps its own copy of
// (halab.Options.Private) for Corosync and Pacemaker to run two nodes on
// one host.
func PacemakerPrivate() []string {
	return []string{"/etc/corosync", "/var/lib/corosync", "/var/lib/pacemaker", "/var/log/pacemaker", "/var/log/corosync"}
}

// PacemakerOverlay are the folders where each node gets files of its own
// on top of the host's (halab.Options.Overlay): the fence agent must be in
// /usr/sbin, where Pacemaker's fencer looks for fence_* agents.
func PacemakerOverlay() []string { return []string{"/usr/sbin"} }

// Pacemaker runs Pacemaker 2.1 with Corosync 3.1 (knet over both private
// links, two_node) and the group fs (ocf:heartbeat:Filesystem, ext4 on a
// loop device both nodes see), vip (IPaddr2) and db (pgsql), started in
// that order, stickiness 100 over a preference of 50 for n1 (no
// fail-back). A clone of ocf:pacemaker:ping on both nodes pings the lab's
// client (the public network's only other host) and a location rule keeps
// the group off a node whose pingd is 0 or not defined: Pacemaker's
// documented way to move a group off a node whose public cable is pulled
// (Corosync runs on the private links and does not notice). Fencing is enabled with stonith-action off and done by
// fence_halab, a small agent that asks the lab's power switch to cut the
// node's power: fence_scsi cannot run here (it needs the kernel's SCSI
// layer: sg_persist on a /dev/sdX, but this kernel has no iSCSI initiator,
// no SCSI disks, and a loop device has no persistent reservations). The
// lab must be built with PacemakerPrivate and PacemakerOverlay.
//
// dc-deadtime is 2 s instead of 20 s: it only delays a cold start (the
// wait for a DC to show up), not a takeover, and keeps the harness quick.
// pgsql's start_opt gives PostgreSQL the recovery_init_sync_method=syncfs
// that hamirror's database has (one flush for the data directory at the
// start of crash recovery instead of one per file).
type Pacemaker struct {
	halab.Faults
	Token int // Corosync totem token in ms; 0 keeps Corosync's default (3000)
	// Ping is the ping resource's monitor interval, with a dampen of 0 s
	// and one attempt of 1 s; 0 keeps the agent's defaults (every 10 s,
	// dampen 5 s, 3 attempts of 2 s each).
	Ping time.Duration

	// cleanMove: the last fault (a pulled public cable) moves the group
	// by stopping it on the victim, without fencing; Recover's crash
	// fences it later.
	cleanMove bool

	dev string // the shared volume
	mnt string // where the group mounts it
	pm  map[string][]*halab.Daemon
}

// PacemakerAvailable reports why Pacemaker cannot run here.
func PacemakerAvailable() error {
	for _, b := range []string{"corosync", "corosync-cfgtool", "pacemakerd", "crm_mon", "mkfs.ext4"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not installed: run make deps (apt packages pacemaker corosync resource-agents)", b)
		}
	}
	for _, a := range []string{"Filesystem", "IPaddr2", "pgsql"} {
		if _, err := os.Stat("/usr/lib/ocf/resource.d/heartbeat/" + a); err != nil {
			return fmt.Errorf("OCF agent %s not installed: run make deps (apt package resource-agents)", a)
		}
	}
	return halab.PGAvailable()
}

// Name says which timing runs.
func (p *Pacemaker) Name() string {
	name := "Pacemaker+Corosync, defaults (token 3000)"
	if p.Token != 0 {
		name = fmt.Sprintf("Pacemaker+Corosync, token %d", p.Token)
	}
	if p.Ping != 0 {
		name += fmt.Sprintf(", ping every %v", p.Ping)
	}
	return name
}

// Setup makes the shared volume with a database on it and each node's
// Corosync configuration, CIB and fence agent.
func (p *Pacemaker) Setup(ctx context.Context, l *halab.Lab) error {
	if err := PacemakerAvailable(); err != nil {
		return err
	}
	p.Lab, p.pm = l, map[string][]*halab.Daemon{}
	for _, n := range l.Nodes() {
		if _, err := os.Stat(n.Path("/usr/sbin")); err != nil {
			return errors.New("the lab lacks Pacemaker's folders: build it with Options{Private: peers.PacemakerPrivate(), Overlay: peers.PacemakerOverlay()}")
		}
	}
	var err error
	if p.dev, err = l.LoopDevice("pgvol", 256<<20); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", p.dev).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", p.dev, err, out)
	}
	p.mnt = filepath.Join(l.Dir, "pgvol")
	if err := os.Mkdir(p.mnt, 0o755); err != nil {
		return err
	}
	n1 := l.Node("n1")
	if _, err := n1.Run(ctx, "mount", p.dev, p.mnt); err != nil {
		return err
	}
	err = n1.InitDB(ctx, p.pgdata())
	if _, uerr := n1.Run(ctx, "umount", p.mnt); err == nil {
		err = uerr
	}
	if err != nil {
		return err
	}
	for _, n := range l.Nodes() {
		if err := p.writeNodeFiles(n); err != nil {
			return fmt.Errorf("%s: %w", n.ID, err)
		}
	}
	return nil
}

func (p *Pacemaker) pgdata() string { return filepath.Join(p.mnt, "pgdata") }

func (p *Pacemaker) writeNodeFiles(n *halab.Node) error {
	if err := os.WriteFile(filepath.Join(n.Path("/etc/corosync"), "corosync.conf"), []byte(p.corosyncConf()), 0o644); err != nil {
		return err
	}
	agent := strings.ReplaceAll(fenceAgent, "@POWER_DIR@", p.Lab.PowerDir())
	if err := os.WriteFile(filepath.Join(n.Path("/usr/sbin"), "fence_halab"), []byte(agent), 0o755); err != nil {
		return err
	}
	cib := filepath.Join(n.Path("/var/lib/pacemaker"), "cib", "cib.xml")
	if err := os.WriteFile(cib, []byte(p.cib()), 0o600); err != nil {
		return err
	}
	// Owned by the cluster's user, as pacemaker-based wants it.
	out, err := exec.Command("chown", "hacluster:haclient", cib).CombinedOutput()
	if err != nil {
		return fmt.Errorf("chown %s: %w: %s", cib, err, out)
	}
	return nil
}

func (p *Pacemaker) corosyncConf() string {
	var b strings.Builder
	b.WriteString("totem {\n    version: 2\n    cluster_name: halab\n    transport: knet\n    crypto_cipher: none\n    crypto_hash: none\n")
	if p.Token != 0 {
		fmt.Fprintf(&b, "    token: %d\n", p.Token)
	}
	b.WriteString("}\n\nnodelist {\n")
	for _, n := range p.Lab.Nodes() {
		fmt.Fprintf(&b, "    node {\n        name: %s\n        nodeid: %d\n        ring0_addr: %s\n        ring1_addr: %s\n    }\n",
			n.ID, n.Index, n.PrivateAddr(1), n.PrivateAddr(2))
	}
	b.WriteString("}\n\nquorum {\n    provider: corosync_votequorum\n    two_node: 1\n}\n\n")
	b.WriteString("logging {\n    to_stderr: no\n    to_syslog: no\n    to_logfile: yes\n    logfile: /var/log/corosync/corosync.log\n    timestamp: hires\n}\n")
	return b.String()
}

func (p *Pacemaker) cib() string {
	op := func(rsc, name, interval, timeout string) string {
		return fmt.Sprintf(`<op id="%s-%s-%s" name="%s" interval="%s" timeout="%s"/>`, rsc, name, interval, name, interval, timeout)
	}
	nv := func(owner, name, value string) string {
		return fmt.Sprintf(`<nvpair id="%s-%s" name="%s" value="%s"/>`, owner, name, name, value)
	}
	pingOpts, pingInterval := "", "10s"
	if p.Ping != 0 {
		pingInterval = fmt.Sprintf("%dms", p.Ping.Milliseconds())
		pingOpts = nv("ping", "dampen", "0s") + nv("ping", "attempts", "1") + nv("ping", "timeout", "1")
	}
	return `<cib validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        ` + nv("opt", "stonith-enabled", "true") + `
        ` + nv("opt", "stonith-action", "off") + `
        ` + nv("opt", "dc-deadtime", "2s") + `
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources>
      <primitive id="fence" class="stonith" type="fence_halab">
        <instance_attributes id="fence-ia">
          ` + nv("fence", "pcmk_host_list", "n1 n2") + `
          ` + nv("fence", "pcmk_host_check", "static-list") + `
          ` + nv("fence", "power_dir", p.Lab.PowerDir()) + `
        </instance_attributes>
        <operations>` + op("fence", "monitor", "60s", "20s") + `</operations>
      </primitive>
      <group id="g">
        <primitive id="fs" class="ocf" provider="heartbeat" type="Filesystem">
          <instance_attributes id="fs-ia">
            ` + nv("fs", "device", p.dev) + `
            ` + nv("fs", "directory", p.mnt) + `
            ` + nv("fs", "fstype", "ext4") + `
          </instance_attributes>
          <operations>` + op("fs", "monitor", "20s", "40s") + op("fs", "start", "0", "60s") + op("fs", "stop", "0", "60s") + `</operations>
        </primitive>
        <primitive id="vip" class="ocf" provider="heartbeat" type="IPaddr2">
          <instance_attributes id="vip-ia">
            ` + nv("vip", "ip", halab.VIP) + `
            ` + nv("vip", "cidr_netmask", "24") + `
            ` + nv("vip", "nic", halab.PublicNIC) + `
          </instance_attributes>
          <operations>` + op("vip", "monitor", "10s", "20s") + `</operations>
        </primitive>
        <primitive id="db" class="ocf" provider="heartbeat" type="pgsql">
          <instance_attributes id="db-ia">
            ` + nv("db", "pgctl", halab.PGBin+"/pg_ctl") + `
            ` + nv("db", "psql", "/usr/bin/psql") + `
            ` + nv("db", "pgdata", p.pgdata()) + `
            ` + nv("db", "config", p.pgdata()+"/postgresql.conf") + `
            ` + nv("db", "socketdir", "/run/postgresql") + `
            ` + nv("db", "tmpdir", "/run/pgsql-tmp") + `
            ` + nv("db", "logfile", p.mnt+"/postgresql.log") + `
            ` + nv("db", "start_opt", "-c recovery_init_sync_method=syncfs") + `
          </instance_attributes>
          <operations>` + op("db", "monitor", "10s", "30s") + op("db", "start", "0", "120s") + op("db", "stop", "0", "120s") + `</operations>
        </primitive>
      </group>
      <clone id="ping-clone">
        <primitive id="ping" class="ocf" provider="pacemaker" type="ping">
          <instance_attributes id="ping-ia">
            ` + nv("ping", "host_list", halab.ClientAddr) + `
            ` + nv("ping", "multiplier", "1000") + pingOpts + `
          </instance_attributes>
          <operations>` + op("ping", "monitor", pingInterval, "60s") + `</operations>
        </primitive>
      </clone>
    </resources>
    <constraints>
      <rsc_location id="prefer-n1" rsc="g" node="n1" score="50"/>
      <rsc_location id="g-needs-ping" rsc="g">
        <rule id="g-needs-ping-rule" score="-INFINITY" boolean-op="or">
          <expression id="g-needs-ping-undefined" attribute="pingd" operation="not_defined"/>
          <expression id="g-needs-ping-zero" attribute="pingd" type="number" operation="lte" value="0"/>
        </rule>
      </rsc_location>
    </constraints>
    <rsc_defaults>
      <meta_attributes id="rsc-options">` + nv("rsc", "resource-stickiness", "100") + `</meta_attributes>
    </rsc_defaults>
  </configuration>
  <status/>
</cib>
`
}

// Start runs Corosync and Pacemaker on both nodes and waits until the
// group runs on n1 and the database answers through the VIP.
func (p *Pacemaker) Start(ctx context.Context) error {
	errc := make(chan error, 2)
	for _, n := range p.Lab.Nodes() {
		go func() { errc <- p.startStack(ctx, n) }()
	}
	for range 2 {
		if err := <-errc; err != nil {
			return err
		}
	}
	if err := p.waitGroup(ctx, "n1", 2*time.Minute); err != nil {
		return err
	}
	if err := p.Lab.WaitPG(ctx, net.JoinHostPort(halab.VIP, "5432"), time.Minute, nil); err != nil {
		return err
	}
	return p.Lab.CreateLedger(ctx, net.JoinHostPort(halab.VIP, "5432"))
}

// startStack starts Corosync, waits for its rings, then Pacemaker.
func (p *Pacemaker) startStack(ctx context.Context, n *halab.Node) error {
	cs, err := n.StartDaemon("corosync", "corosync", "-f")
	if err != nil {
		return err
	}
	p.pm[n.ID] = []*halab.Daemon{cs}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := n.Run(ctx, "corosync-cfgtool", "-s"); err == nil {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("%s: corosync not up within 30s: %w", n.ID, err)
		}
		select {
		case <-cs.Done():
			return fmt.Errorf("%s: corosync exited; see %s and %s", n.ID, cs.Log, n.Path("/var/log/corosync/corosync.log"))
		case <-time.After(100 * time.Millisecond):
		}
	}
	pm, err := n.StartDaemon("pacemakerd", "pacemakerd")
	if err != nil {
		return err
	}
	p.pm[n.ID] = append(p.pm[n.ID], pm)
	return nil
}

// waitGroup waits until the cluster has settled with the group on want:
// crm_mon on each node (so each has joined and holds the DC's CIB) names
// a DC, shows both nodes online and not pending, and every group resource
// started on want. A node that has not finished joining when the other
// fails elects itself with no knowledge of the group and starts it without
// fencing: the campaign must never fault a cluster in that state.
func (p *Pacemaker) waitGroup(ctx context.Context, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		settled := true
		for _, on := range []string{"n1", "n2"} {
			st, err := p.status(ctx, on)
			if err != nil {
				settled, last = false, err.Error()
				break
			}
			if !st.settled() || st.groupOn() != want {
				settled, last = false, on+" sees "+st.String()
				break
			}
			// And its controller has joined: S_NOT_DC, or S_IDLE as the DC.
			out, err := p.Lab.Node(on).Run(ctx, "crmadmin", "-q", "-S", on)
			if err != nil || !(strings.Contains(out, "S_NOT_DC") || strings.Contains(out, "S_IDLE")) {
				settled, last = false, fmt.Sprintf("%s's controller: %q %v", on, strings.TrimSpace(out), err)
				break
			}
		}
		if settled {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster did not settle with the group on %s within %v; last: %s", want, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitTakeover waits until crm_mon on node on shows node gone offline and
// fenced (not unclean) and the group running on on. After a kill the group
// moves only after the fence; after a fault Pacemaker handled without one
// (a public cable pulled: the group moved cleanly) the fence of the crash
// comes later, and a node booted before it is switched off again.
func (p *Pacemaker) waitTakeover(ctx context.Context, on, gone string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := p.status(ctx, on)
		if err == nil && st.online[on] && !st.online[gone] && !st.unclean[gone] && st.groupOn() == on {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not take the group over from %s within %v of its crash (last: %v %v)", on, gone, timeout, st, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Kill, Freeze and PublicDown are the lab's faults; PublicDown makes the
// next Breakdown a clean move's.
func (p *Pacemaker) Kill(ctx context.Context, node string) error {
	p.cleanMove = false
	return p.Faults.Kill(ctx, node)
}

func (p *Pacemaker) Freeze(ctx context.Context, node string) error {
	p.cleanMove = false
	return p.Faults.Freeze(ctx, node)
}

func (p *Pacemaker) PublicDown(ctx context.Context, node string) error {
	p.cleanMove = true
	return p.Faults.PublicDown(ctx, node)
}

// Active is the node holding the VIP.
func (p *Pacemaker) Active(context.Context) (string, error) { return vipHolder(p.Lab) }

// Recover boots node again (the fence left it powered off) and starts
// Corosync and Pacemaker there; it returns once the node is online and the
// group still runs on the other node.
func (p *Pacemaker) Recover(ctx context.Context, node string) error {
	n := p.Lab.Node(node)
	if err := n.Crash(); err != nil {
		return err
	}
	// After a fault the cluster did not act on (a public cable pulled),
	// the survivor must see the node leave, fence it (it is off already)
	// and take the group over before the node boots again: booted earlier,
	// it would rejoin before Corosync's token ran out, or be switched off
	// again by the fence.
	if err := p.waitTakeover(ctx, halab.Peer(node), node, 2*time.Minute); err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	if err := p.startStack(ctx, n); err != nil {
		return err
	}
	return p.waitGroup(ctx, halab.Peer(node), 2*time.Minute)
}

// Stop stops Pacemaker (which stops the group) and Corosync on both nodes.
func (p *Pacemaker) Stop(context.Context) error {
	for _, ds := range p.pm {
		for i := len(ds) - 1; i >= 0; i-- {
			ds[i].Stop(30 * time.Second)
		}
	}
	return nil
}
