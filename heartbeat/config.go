package heartbeat

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// NodeID names a cluster member. It is unique in the cluster and orders
// nodes deterministically (ties at start-up go to the smallest ID).
type NodeID string

// Timing holds the failure detector's periods. All four are configurable
// under the YAML key "timing".
type Timing struct {
	// Keepalive is how often a node sends a heartbeat on every medium and
	// rewrites its disk slot.
	Keepalive time.Duration `mapstructure:"keepalive"`
	// Warn is the silence on a medium (or on every network medium for a
	// node) after which it is reported as warn (node: suspect).
	Warn time.Duration `mapstructure:"warn"`
	// Dead is the silence on every medium, disk slots included, after
	// which a node is declared dead.
	Dead time.Duration `mapstructure:"dead"`
	// InitDead is how long a freshly started node waits to hear from its
	// peers before it takes the active role alone.
	InitDead time.Duration `mapstructure:"initdead"`
}

// NIC is one node's attachment to a UDP medium (a private NIC).
type NIC struct {
	Medium    string `mapstructure:"medium"`    // medium name shared by all nodes, e.g. "nic1"
	Interface string `mapstructure:"interface"` // this node's NIC, bound with SO_BINDTODEVICE
	Address   string `mapstructure:"address"`   // this node's IP on that NIC
}

// Node is one member as configured.
type Node struct {
	ID      NodeID `mapstructure:"id"`
	Address string `mapstructure:"address"` // public / management IP shown in the index table
	Links   []NIC  `mapstructure:"links"`
	// Serial is this node's serial device for the point-to-point serial
	// medium (two-node clusters only); empty: no serial line.
	Serial string `mapstructure:"serial"`
	// Slot is this node's disk heartbeat slot on every disk (default: the
	// node's position in the list).
	Slot *int `mapstructure:"slot"`
}

// Disk is a disk heartbeat medium: an area of Slots slots of SlotSize
// bytes at Offset of the file or device Path; or, with Leg, the slots the
// mirror engine reserved at the end of a mirror leg (a device path or an
// iscsi:// URL), whose place and size mirrord reads from the leg's metadata
// (then Path, Offset, SlotSize and Slots stay unset).
type Disk struct {
	Name     string `mapstructure:"name"`
	Path     string `mapstructure:"path"`
	Leg      string `mapstructure:"leg"`
	Offset   int64  `mapstructure:"offset"`
	SlotSize int64  `mapstructure:"slot_size"`
	Slots    int    `mapstructure:"slots"`
}

// Config is the heartbeat part of the cluster file.
type Config struct {
	Cluster   string `mapstructure:"name"`
	KeyFile   string `mapstructure:"key_file"`
	Preferred NodeID `mapstructure:"preferred"`
	// Failback (cluster.failback): when true an active node hands the
	// active role back to the preferred node once that node is alive,
	// eligible and settled (alive for timing.warn). When false an active
	// node stays active (stickiness).
	Failback bool `mapstructure:"failback"`
	// FailbackDelay (cluster.failback_delay, default 0; like keepalived's
	// preempt_delay): with Failback, the preferred node must also have
	// been alive, eligible and of unchanged ping score for this long, so
	// that a flapping public cable or a node that keeps rebooting does
	// not move the group at each flap.
	FailbackDelay time.Duration `mapstructure:"failback_delay"`
	Port          int           `mapstructure:"port"`
	Baud          int           `mapstructure:"baud"`
	Nodes         []Node
	Disks         []Disk
	Timing        Timing
	// PingTargets are public-network addresses probed with ICMP echo; the
	// node that reaches more of them is the better holder of the VIP.
	PingTargets  []string
	PingInterval time.Duration
	// StateDir keeps the boot ID counter and the highest takeover term
	// across restarts (cluster.state_dir).
	StateDir string `mapstructure:"state_dir"`
	// Self is the local node (mirrord --node, default the host name).
	Self NodeID
}

// DefaultConfig returns the defaults with the reason for each.
func DefaultConfig() Config {
	return Config{
		// Failback is off: every move of the service is an outage, so it
		// moves only when it must (Pacemaker's resource-stickiness and
		// keepalived's nopreempt make the same choice); an operator who
		// wants the preferred node back moves it when it suits.
		Failback: false,
		// 5405 is free on an HA pair (Corosync uses 5404/5405 only when
		// installed, and a hamirror node does not run Corosync).
		Port: 5405,
		// 115200 8N1 is what every RS-232 UART and USB adapter does; a
		// heartbeat frame (~120 bytes, up to ~760 with the largest app
		// state) takes 10-66 ms on the wire. Validate refuses a rate that
		// cannot carry the largest one every keepalive (19200 and below
		// at the default timing).
		Baud: 115200,
		Timing: Timing{
			// 200 ms: five frames per second per medium is nothing for a
			// NIC or a 115200 baud line, and gives ten chances before dead.
			Keepalive: 200 * time.Millisecond,
			// 1 s = five lost keepalives: a loaded network drops one or two,
			// never five in a row unless the link is broken.
			Warn: time.Second,
			// 2 s of silence on EVERY medium: tighter than Corosync (3 s) and
			// keepalived (3.5 s), still ten keepalives of margin.
			Dead: 2 * time.Second,
			// 10 s after boot: the peer's BIOS/daemon may start a little
			// later; waiting avoids both nodes claiming the active role.
			InitDead: 10 * time.Second,
		},
		// The FHS place for a daemon's persistent state; it holds only the
		// boot ID counter (a few bytes, rewritten once per start).
		StateDir: "/var/lib/hamirror",
		// Probing the public targets once a second is enough to compare
		// connectivity; moving the VIP is a slow decision anyway.
		PingInterval: time.Second,
	}
}

// KeyError is a configuration error naming the offending YAML key.
type KeyError struct {
	Key string
	Msg string
}

func (e *KeyError) Error() string { return fmt.Sprintf("cluster config: %s: %s", e.Key, e.Msg) }

func keyErr(key, format string, a ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, a...)}
}

// Validate rejects impossible settings. Each error is a *KeyError naming
// the key to fix. Validate does not touch the key file (see LoadKey).
func (c *Config) Validate() error {
	t := c.Timing
	switch {
	case c.Cluster == "":
		return keyErr("cluster.name", "is empty: name the cluster (both nodes must use the same name)")
	case len(c.Cluster) > 64:
		return keyErr("cluster.name", "is longer than 64 bytes")
	case c.KeyFile == "":
		return keyErr("cluster.key_file", "is empty: give the path of the root-only cluster key file")
	case c.Port <= 0 || c.Port > 65535:
		return keyErr("cluster.port", "%d is not a UDP port", c.Port)
	case c.Baud <= 0:
		return keyErr("cluster.baud", "%d is not a baud rate", c.Baud)
	case t.Keepalive <= 0:
		return keyErr("timing.keepalive", "must be positive")
	case t.Warn <= t.Keepalive:
		return keyErr("timing.warn", "(%v) must be more than timing.keepalive (%v)", t.Warn, t.Keepalive)
	case t.Dead <= 2*t.Keepalive:
		return keyErr("timing.dead", "(%v) must be more than 2 × timing.keepalive (%v): one lost keepalive would kill the peer", t.Dead, t.Keepalive)
	case t.Dead <= t.Warn:
		return keyErr("timing.dead", "(%v) must be more than timing.warn (%v)", t.Dead, t.Warn)
	case t.InitDead < t.Dead:
		return keyErr("timing.initdead", "(%v) must be at least timing.dead (%v)", t.InitDead, t.Dead)
	case len(c.Nodes) < 2:
		return keyErr("nodes", "lists %d node(s); a cluster needs 2 or more", len(c.Nodes))
	case len(c.Nodes) > 64:
		return keyErr("nodes", "lists %d nodes; at most 64 are supported", len(c.Nodes))
	case len(c.PingTargets) > 0 && c.PingInterval <= 0:
		return keyErr("ping.interval", "must be positive")
	}
	if c.FailbackDelay < 0 {
		return keyErr("cluster.failback_delay", "%v is negative", c.FailbackDelay)
	}
	seen := map[NodeID]int{}
	media := map[string]int{}
	serial := 0
	for i, n := range c.Nodes {
		key := fmt.Sprintf("nodes[%d]", i)
		if n.ID == "" || len(n.ID) > 64 {
			return keyErr(key+".id", "must be 1 to 64 bytes")
		}
		if j, dup := seen[n.ID]; dup {
			return keyErr(key+".id", "%q is also nodes[%d].id", n.ID, j)
		}
		seen[n.ID] = i
		mine := map[string]bool{}
		for k, l := range n.Links {
			lk := fmt.Sprintf("%s.links[%d]", key, k)
			if l.Medium == "" || len(l.Medium) > 32 {
				return keyErr(lk+".medium", "must be 1 to 32 bytes")
			}
			if l.Medium == SerialMedium || isDiskName(c, l.Medium) {
				return keyErr(lk+".medium", "%q is reserved for the serial line or a disk", l.Medium)
			}
			if mine[l.Medium] {
				return keyErr(lk+".medium", "%q listed twice for node %s", l.Medium, n.ID)
			}
			mine[l.Medium] = true
			media[l.Medium]++
			if l.Address == "" {
				return keyErr(lk+".address", "is empty")
			}
			if len(l.Address) > maxTableStr {
				return keyErr(lk+".address", "must be at most %d bytes (it travels in the index table)", maxTableStr)
			}
		}
		if len(n.Address) > maxTableStr {
			return keyErr(key+".address", "must be at most %d bytes (it travels in the index table)", maxTableStr)
		}
		if na := len(n.Links) + min(len(n.Address), 1); na > maxRowAddrs {
			return keyErr(key+".links", "%d links and the node's address make %d addresses; the index table carries at most %d a node", len(n.Links), na, maxRowAddrs)
		}
		if n.Serial != "" {
			serial++
		}
		if n.Slot != nil && *n.Slot < 0 {
			return keyErr(key+".slot", "is negative")
		}
	}
	if c.Preferred != "" {
		if _, ok := seen[c.Preferred]; !ok {
			return keyErr("cluster.preferred", "%q is not a node in nodes", c.Preferred)
		}
	}
	if c.Self != "" {
		if _, ok := seen[c.Self]; !ok {
			return keyErr("node", "this node %q is not in nodes (set mirrord --node)", c.Self)
		}
	}
	if need := c.tableFrameNeeded(); need > MaxFrame {
		return keyErr("nodes", "the index table of these %d nodes takes up to %d bytes in a frame, over the %d byte limit: use shorter node IDs or addresses, or fewer links", len(c.Nodes), need, MaxFrame)
	}
	for m, cnt := range media {
		if cnt < 2 {
			return keyErr("nodes[].links", "medium %q is configured on only one node", m)
		}
	}
	if serial != 0 && (serial != 2 || len(c.Nodes) != 2) {
		return keyErr("nodes[].serial", "a serial line joins exactly two nodes: set it on both nodes of a two-node cluster")
	}
	if serial != 0 {
		// 8N1: ten bits a byte. Slower, the line falls behind: frames
		// queue in the tty buffer and arrive late, and a stopped peer
		// stays alive on it for as long as its buffer drains.
		need := c.slotNeeded(SerialMedium) - 2 + serialOverhead
		if carry := int64(c.Baud) / 10 * int64(t.Keepalive) / int64(time.Second); carry < need {
			least, rate := need*10*int64(time.Second)/int64(t.Keepalive), 0
			for r := range baudRates {
				if int64(r) > least && (rate == 0 || r < rate) {
					rate = r
				}
			}
			hint := fmt.Sprintf("set %d or more (or a longer timing.keepalive)", rate)
			if rate == 0 {
				hint = "no supported rate is fast enough: set a longer timing.keepalive"
			}
			return keyErr("cluster.baud", "%d baud carries %d bytes per timing.keepalive (%v), but a heartbeat with the largest app state takes %d on the serial line: frames would queue and arrive late; %s",
				c.Baud, carry, t.Keepalive, need, hint)
		}
	}
	if len(media) == 0 && serial == 0 {
		return keyErr("nodes[].links", "no network medium: configure at least one private NIC or the serial line")
	}
	slots := map[int]NodeID{}
	for i, n := range c.Nodes {
		s := c.SlotOf(n.ID)
		if other, dup := slots[s]; dup {
			return keyErr(fmt.Sprintf("nodes[%d].slot", i), "slot %d is also used by %s", s, other)
		}
		slots[s] = n.ID
	}
	for i, d := range c.Disks {
		key := fmt.Sprintf("disks[%d]", i)
		switch {
		case d.Name == "" || len(d.Name) > 32:
			return keyErr(key+".name", "must be 1 to 32 bytes")
		case d.Leg != "" && (d.Path != "" || d.Offset != 0 || d.SlotSize != 0 || d.Slots != 0):
			return keyErr(key+".leg", "a leg's slots are found in its metadata: leave path, offset, slot_size and slots unset")
		case d.Leg != "":
			continue // checked against the nodes when the leg is opened
		case d.Offset < 0:
			return keyErr(key+".offset", "is negative")
		case d.SlotSize < MinSlotSize:
			return keyErr(key+".slot_size", "%d is less than %d bytes: a heartbeat carries up to %d bytes of app state (frame version 3); set %d or more", d.SlotSize, MinSlotSize, MaxAppState, max(MinSlotSize, c.slotNeeded(d.Name)))
		case d.SlotSize < c.slotNeeded(d.Name):
			return keyErr(key+".slot_size", "%d bytes cannot hold a heartbeat of this cluster (%d nodes, %d bytes of app state): at least %d are needed", d.SlotSize, len(c.Nodes), MaxAppState, c.slotNeeded(d.Name))
		case d.Slots < len(c.Nodes):
			return keyErr(key+".slots", "%d slots for %d nodes", d.Slots, len(c.Nodes))
		}
		for s := range slots {
			if s >= d.Slots {
				return keyErr(key+".slots", "has %d slots but a node uses slot %d", d.Slots, s)
			}
		}
	}
	return nil
}

// slotNeeded is the slot size disk medium name needs: a 2-byte length and
// the longest heartbeat frame a node of this cluster writes there, which
// echoes the run nonce of every other node and carries the largest app
// state (MaxAppState).
func (c *Config) slotNeeded(name string) int64 {
	id := 0
	for _, n := range c.Nodes {
		id = max(id, len(n.ID))
	}
	return int64(2 + headerLen + 4 + len(c.Cluster) + id + len(name) + echoLen*max(len(c.Nodes)-1, 0) +
		heartbeatFixed + MaxAppState + macLen)
}

// tableFrameNeeded is the largest table frame the coordinator can send
// (Table.MarshalBinary; any backup target and address in every row).
func (c *Config) tableFrameNeeded() int {
	id, addr, medium := 0, 0, 0
	for _, n := range c.Nodes {
		id = max(id, len(n.ID))
		addr = max(addr, len(n.Address))
		for _, l := range n.Links {
			addr, medium = max(addr, len(l.Address)), max(medium, len(l.Medium))
		}
	}
	payload := 8 + 1 + id + 1
	for _, n := range c.Nodes {
		payload += 1 + len(n.ID) + 1 + 1 + id + 1 + addr + 1
		if n.Address != "" {
			payload += 1 + len(n.Address)
		}
		for _, l := range n.Links {
			payload += 1 + len(l.Address)
		}
	}
	return headerLen + 4 + len(c.Cluster) + id + max(medium, len(SerialMedium)) + echoLen*max(len(c.Nodes)-1, 0) + payload + macLen
}

func isDiskName(c *Config, m string) bool {
	for _, d := range c.Disks {
		if d.Name == m {
			return true
		}
	}
	return false
}

// SlotOf returns node id's disk slot (its configured slot or its position).
func (c *Config) SlotOf(id NodeID) int {
	for i, n := range c.Nodes {
		if n.ID == id {
			if n.Slot != nil {
				return *n.Slot
			}
			return i
		}
	}
	return -1
}

// NodeByID returns the configured node.
func (c *Config) NodeByID(id NodeID) (Node, bool) {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return Node{}, false
}

// MinKeyLen is the shortest accepted cluster key (bytes after trimming).
const MinKeyLen = 16

// LoadKey reads the cluster key. The file must be a regular file readable
// by its owner only: a group- or world-readable key is refused, because
// anyone who reads it can forge "I am alive" or "I am dead".
func LoadKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cluster key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("cluster key %s has mode %04o: it must be readable by root only (chmod 600 %s)", path, perm, path)
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	for len(key) > 0 && (key[len(key)-1] == '\n' || key[len(key)-1] == '\r') {
		key = key[:len(key)-1]
	}
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("cluster key %s holds %d bytes; at least %d are needed (head -c 32 /dev/urandom | base64 > %s)", path, len(key), MinKeyLen, path)
	}
	return key, nil
}

// ErrNoSelf is returned when the local node cannot be found in the config.
var ErrNoSelf = errors.New("this node is not in the cluster config")
