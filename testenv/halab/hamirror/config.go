package hamirror

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// Profile is the membership timing a lab runs with.
type Profile struct {
	// Name is shown in the System's name ("defaults", "fast").
	Name string
	// Keepalive, Warn, Dead and InitDead are the timing section; zero
	// leaves the section out (the product's defaults: 200ms, 1s, 2s, 10s).
	Keepalive, Warn, Dead, InitDead time.Duration
	// Baud of the serial line (0: the default, 115200); NoSerial leaves
	// the serial line out of the cluster file.
	Baud     int
	NoSerial bool
	// MonitorInterval of the database and the VIP (0: their defaults,
	// 10 s): how soon a killed PostgreSQL is noticed.
	MonitorInterval time.Duration
	// MigrationThreshold of the group (0: the default, 3).
	MigrationThreshold int
	// Ping makes the lab's client (halab.ClientAddr) the nodes' public
	// ping target, probed every PingInterval (0: the default, 1 s): a
	// node whose public cable is pulled hands the group to its peer.
	Ping         bool
	PingInterval time.Duration
}

// DefaultProfile is the product's default timing.
func DefaultProfile() Profile { return Profile{Name: "defaults"} }

// FastProfile is the documented fast profile: keepalive 50 ms, dead
// 300 ms. At 50 ms a 115200-baud serial line cannot carry a heartbeat
// with the largest app state (the heartbeat refuses it below 230400), so
// the line runs at 460800 baud. Fencing makes an early takeover safe: a
// false one costs a move, never a second writer.
func FastProfile() Profile {
	return Profile{Name: "fast", Keepalive: 50 * time.Millisecond, Warn: 150 * time.Millisecond,
		Dead: 300 * time.Millisecond, InitDead: 3 * time.Second, Baud: 460800}
}

// The paths inside each node. /run is the node's own (a tmpfs per boot);
// the state directory is a link to the node's folder, so it survives the
// node's crashes as a disk would.
const (
	stateLink = "/run/hamirror-state"
	devLink   = "/run/hamirror/volume"
)

// paths are the host paths of one lab.
type paths struct {
	cfg, key string
	// fuse is the volume's nbdfuse folder, named after the lab: loop
	// devices are the host's and show this path as their backing file,
	// so a lab tells its own from another lab's.
	fuse   string
	srv    string // the filesystem's mount point (mounted in the active node only)
	pgdata string
}

func labPaths(l *halab.Lab) paths {
	return paths{cfg: filepath.Join(l.Dir, "cluster.yaml"), key: filepath.Join(l.Dir, "cluster.key"),
		fuse: "/run/hamirror/fuse-" + filepath.Base(l.Dir),
		srv:  filepath.Join(l.Dir, "srv"), pgdata: filepath.Join(l.Dir, "srv", "pg")}
}

// clusterFile is the lab's cluster file.
func clusterFile(l *halab.Lab, p paths, pr Profile) string {
	var b strings.Builder
	arrays := l.Arrays()
	fmt.Fprintf(&b, "cluster: {name: halab, key_file: %s, preferred: n1, state_dir: %s", p.key, stateLink)
	if pr.Baud != 0 {
		fmt.Fprintf(&b, ", baud: %d", pr.Baud)
	}
	b.WriteString("}\n")
	if pr.Keepalive != 0 {
		fmt.Fprintf(&b, "timing: {keepalive: %v, warn: %v, dead: %v, initdead: %v}\n", pr.Keepalive, pr.Warn, pr.Dead, pr.InitDead)
	}
	if pr.Ping {
		fmt.Fprintf(&b, "ping: {targets: [%s]", halab.ClientAddr)
		if pr.PingInterval != 0 {
			fmt.Fprintf(&b, ", interval: %v", pr.PingInterval)
		}
		b.WriteString("}\n")
	}
	b.WriteString("nodes:\n")
	for _, n := range l.Nodes() {
		fmt.Fprintf(&b, "  - id: %s\n    address: %s\n    links:\n", n.ID, n.Addr())
		fmt.Fprintf(&b, "      - {medium: nic1, interface: %s, address: %s}\n", halab.PrivateNIC1, n.PrivateAddr(1))
		fmt.Fprintf(&b, "      - {medium: nic2, interface: %s, address: %s}\n", halab.PrivateNIC2, n.PrivateAddr(2))
		if !pr.NoSerial {
			fmt.Fprintf(&b, "    serial: %s\n", n.Serial)
		}
	}
	b.WriteString("disks:\n")
	for _, a := range arrays {
		fmt.Fprintf(&b, "  - {name: disk-%s, leg: %q}\n", a.Name, a.URL())
	}
	fmt.Fprintf(&b, "volume:\n  legs: [%q, %q]\n  fuse: %s\n  link: %s\n", arrays[0].URL(), arrays[1].URL(), p.fuse, devLink)
	if pr.MigrationThreshold != 0 {
		fmt.Fprintf(&b, "group: {migration_threshold: %d}\n", pr.MigrationThreshold)
	}
	mon := ""
	if pr.MonitorInterval != 0 {
		mon = fmt.Sprintf(", monitor_interval: %v", pr.MonitorInterval)
	}
	b.WriteString("resources:\n")
	fmt.Fprintf(&b, "  - {name: fs, type: filesystem, device: %s, directory: %s, fstype: ext4}\n", devLink, p.srv)
	fmt.Fprintf(&b, "  - {name: vip, type: vip, address: %s/24, interface: %s%s}\n", halab.VIP, halab.PublicNIC, mon)
	// syncfs: crash recovery starts by syncing the data directory; file
	// by file (the default) that is a flush of the volume per file, about
	// a thousand for an empty cluster, seconds of a takeover.
	fmt.Fprintf(&b, "  - {name: db, type: postgresql, datadir: %s, port: %d, options: \"-c recovery_init_sync_method=syncfs\"%s}\n",
		p.pgdata, halab.PGPort, mon)
	return b.String()
}
