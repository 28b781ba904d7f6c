package heartbeat

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func twoNodes() Config {
	c := DefaultConfig()
	c.Cluster, c.KeyFile = "pair", "/etc/hamirror/cluster.key"
	for i, id := range []NodeID{"node1", "node2"} {
		c.Nodes = append(c.Nodes, Node{ID: id, Links: []NIC{
			{Medium: "nic1", Interface: "eth1", Address: []string{"10.0.1.1", "10.0.1.2"}[i]},
			{Medium: "nic2", Interface: "eth2", Address: []string{"10.0.2.1", "10.0.2.2"}[i]},
		}, Serial: "/dev/ttyS1"})
	}
	c.Disks = []Disk{{Name: "disk-a", SlotSize: 1024, Slots: 4}}
	return c
}

func TestDefaultConfigIsValidOnceNodesAreSet(t *testing.T) {
	c := twoNodes()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if DefaultConfig().Failback {
		t.Error("failback is on by default; stickiness is the default")
	}
	d := DefaultConfig().Timing
	if d.Keepalive != 200*time.Millisecond || d.Warn != time.Second || d.Dead != 2*time.Second || d.InitDead != 10*time.Second {
		t.Errorf("defaults changed: %+v", d)
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		key    string
		change func(*Config)
	}{
		{"timing.dead", func(c *Config) { c.Timing.Dead = 400 * time.Millisecond; c.Timing.Warn = 300 * time.Millisecond }},
		{"timing.warn", func(c *Config) { c.Timing.Warn = 100 * time.Millisecond }},
		{"timing.dead", func(c *Config) { c.Timing.Dead = c.Timing.Warn }},
		{"timing.initdead", func(c *Config) { c.Timing.InitDead = time.Second }},
		{"timing.keepalive", func(c *Config) { c.Timing.Keepalive = 0 }},
		{"cluster.name", func(c *Config) { c.Cluster = "" }},
		{"cluster.key_file", func(c *Config) { c.KeyFile = "" }},
		{"cluster.port", func(c *Config) { c.Port = 70000 }},
		{"cluster.failback_delay", func(c *Config) { c.FailbackDelay = -time.Second }},
		{"cluster.preferred", func(c *Config) { c.Preferred = "node9" }},
		{"nodes", func(c *Config) { c.Nodes = c.Nodes[:1] }},
		{"nodes[1].id", func(c *Config) { c.Nodes[1].ID = "node1" }},
		{"nodes[0].links[1].medium", func(c *Config) { c.Nodes[0].Links[1].Medium = "nic1" }},
		{"nodes[0].links[0].medium", func(c *Config) { c.Nodes[0].Links[0].Medium = "serial" }},
		{"nodes[1].links[0].address", func(c *Config) { c.Nodes[1].Links[0].Address = "" }},
		{"nodes[].links", func(c *Config) { c.Nodes[1].Links = c.Nodes[1].Links[:1] }},
		{"nodes[].serial", func(c *Config) { c.Nodes[1].Serial = "" }},
		{"disks[0].slot_size", func(c *Config) { c.Disks[0].SlotSize = 100 }},
		{"disks[0].slot_size", func(c *Config) { // 64 nodes echo 63 nonces each
			c.Disks[0].Slots = 64
			c.Nodes[0].Serial, c.Nodes[1].Serial = "", ""
			for i := 2; i < 64; i++ {
				c.Nodes = append(c.Nodes, Node{ID: NodeID(fmt.Sprint("n", i)), Links: []NIC{
					{Medium: "nic1", Interface: "eth1", Address: fmt.Sprintf("10.0.1.%d", i+1)},
					{Medium: "nic2", Interface: "eth2", Address: fmt.Sprintf("10.0.2.%d", i+1)}}})
			}
		}},
		{"disks[0].slots", func(c *Config) { c.Disks[0].Slots = 1 }},
		{"disks[0].leg", func(c *Config) { c.Disks[0].Leg = "/dev/sdb" }}, // a leg brings its own slots
		{"nodes[1].slot", func(c *Config) { s := 0; c.Nodes[1].Slot = &s }},
		{"node", func(c *Config) { c.Self = "node7" }},
	} {
		c := twoNodes()
		tc.change(&c)
		err := c.Validate()
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key {
			t.Errorf("want an error naming %s, got %v", tc.key, err)
		}
	}
}

func TestLoadFileYAML(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(path, []byte(`
cluster:
  name: pair1
  key_file: /etc/hamirror/cluster.key
  preferred: node2
  failback: true
  failback_delay: 30s
timing:
  keepalive: 100ms
  warn: 500ms
  dead: 1s
  initdead: 5s
nodes:
  - id: node1
    address: 192.168.10.1
    links:
      - {medium: nic1, interface: eth1, address: 10.0.1.1}
  - id: node2
    links:
      - {medium: nic1, interface: eth1, address: 10.0.1.2}
    slot: 3
disks:
  - {name: disk-a, path: /tmp/x, slot_size: 1024, slots: 4}
ping:
  targets: [192.168.10.254]
  interval: 2s
resources:
  anything: goes here   # another package's section
`), 0o644)
	c, err := LoadFile(path, "node1")
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster != "pair1" || c.Preferred != "node2" || !c.Failback || !c.MachineConfig(1).Failback ||
		c.MachineConfig(1).FailbackDelay != 30*time.Second || c.Timing.Keepalive != 100*time.Millisecond ||
		c.Timing.InitDead != 5*time.Second || c.Port != 5405 || c.Baud != 115200 || c.PingInterval != 2*time.Second ||
		len(c.Nodes) != 2 || c.Nodes[0].Links[0].Interface != "eth1" || c.SlotOf("node2") != 3 || c.SlotOf("node1") != 0 ||
		c.Disks[0].Path != "/tmp/x" || c.PingTargets[0] != "192.168.10.254" {
		t.Errorf("loaded %+v", c)
	}
}

func TestLoadFileRejectsUnknownKeysAndBadTiming(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"cluster: {name: a, key_file: k, keepalive: 1s}\n", "cluster"},
		{"cluster: {name: a, key_file: k}\ntiming: {keepalive: 1s}\nnodes: [{id: a, links: [{medium: n, address: x}]}, {id: b, links: [{medium: n, address: y}]}]\n", "timing.warn"},
		{"cluster: {name: a, key_file: k}\ntiming: {keepalve: 1s}\n", "timing"},
		{"cluster: {name: a, key_file: k, failback_delay: soon}\n", "cluster.failback_delay"},
	} {
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte(tc.yaml), 0o644)
		_, err := LoadFile(path, "")
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tc.want {
			t.Errorf("%q: want error naming %s, got %v", tc.yaml, tc.want, err)
		}
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.yaml"), ""); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadKeyRefusesReadableKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	os.WriteFile(path, []byte("0123456789abcdef0123\n"), 0o600)
	key, err := LoadKey(path)
	if err != nil || string(key) != "0123456789abcdef0123" {
		t.Fatalf("key %q, %v", key, err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		os.Chmod(path, mode)
		if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), "readable by root only") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	os.WriteFile(path, []byte("short"), 0o600)
	os.Chmod(path, 0o600)
	if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), "at least") {
		t.Errorf("short key: %v", err)
	}
	if _, err := LoadKey(dir); err == nil {
		t.Error("a directory was accepted as key")
	}
}

// TestExampleConfigIsValid keeps the documented example loadable.
func TestExampleConfigIsValid(t *testing.T) {
	for _, self := range []NodeID{"node1", "node2"} {
		c, err := LoadFile("testdata/cluster.example.yaml", self)
		if err != nil {
			t.Fatal(err)
		}
		if mc := c.MachineConfig(1); len(mc.Media) != 5 || c.SlotOf(self) < 0 {
			t.Errorf("%s: media %+v", self, mc.Media)
		}
	}
}

// TestSlotNeededMatchesTheEncoder: the slot size Validate demands is
// exactly what the longest heartbeat frame of the cluster takes (the
// largest app state included), and a leg's 4096-byte slots hold it even
// for 64 nodes with the longest names.
func TestSlotNeededMatchesTheEncoder(t *testing.T) {
	c := twoNodes()
	c.Cluster = strings.Repeat("c", 64)
	c.Nodes[0].Serial, c.Nodes[1].Serial = "", ""
	c.Nodes[1].ID = NodeID(strings.Repeat("x", 64))
	for i := 2; i < 64; i++ {
		c.Nodes = append(c.Nodes, Node{ID: NodeID(fmt.Sprint("n", i)), Links: []NIC{
			{Medium: "nic1", Interface: "eth1", Address: fmt.Sprintf("10.0.1.%d", i+1)},
			{Medium: "nic2", Interface: "eth2", Address: fmt.Sprintf("10.0.2.%d", i+1)}}})
	}
	disk := strings.Repeat("d", 32)
	c.Disks = []Disk{{Name: disk, SlotSize: 4096, Slots: 64}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	echo := make([]uint64, 63)
	for i := range echo {
		echo[i] = uint64(i + 1)
	}
	b, err := NewCodec(c.Cluster, simKey).Encode(Frame{Type: MsgHeartbeat, Boot: 1, Seq: 1, Nonce: 1, From: c.Nodes[1].ID,
		Medium: disk, Echo: echo, Payload: Heartbeat{App: make([]byte, MaxAppState)}.MarshalBinary()})
	if err != nil {
		t.Fatal(err)
	}
	if need := c.slotNeeded(disk); need != int64(len(b)+2) {
		t.Errorf("slotNeeded %d, the longest frame takes %d+2", need, len(b))
	}
	if len(b) != 1273 || len(b) > MaxFrame { // the bound frame.go documents
		t.Errorf("the largest heartbeat frame is %d bytes, frame.go says 1273", len(b))
	}
	// The largest two-node frame fits the smallest slot.
	two := twoNodes()
	two.Cluster, two.Nodes[0].ID = strings.Repeat("c", 64), NodeID(strings.Repeat("x", 64))
	two.Disks = []Disk{{Name: disk, SlotSize: MinSlotSize, Slots: 2}}
	if err := two.Validate(); err != nil || two.slotNeeded(disk) != 779 {
		t.Errorf("two nodes with the longest names need %d bytes (want 779 <= MinSlotSize): %v", two.slotNeeded(disk), err)
	}
	c.Self = c.Nodes[1].ID
	if _, err := c.DiskLinkFor(disk, &memDisk{b: make([]byte, 64*512)}, 0, 512, 64); err == nil {
		t.Error("a disk link with slots too small for this cluster's frames opened")
	}
}

// TestValidateSerialCarriesTheLargestHeartbeat: a heartbeat with the
// largest app state is ~630 bytes on the serial line (8N1: ten bits a
// byte), sent every keepalive. A line too slow for that falls behind:
// frames queue in the tty buffer and arrive seconds late, which keeps a
// stopped peer "alive" on that medium long after timing.dead. Validate
// refuses such a line (naming cluster.baud) instead.
func TestValidateSerialCarriesTheLargestHeartbeat(t *testing.T) {
	for _, tc := range []struct {
		baud int
		ok   bool
	}{{9600, false}, {19200, false}, {38400, true}, {115200, true}} {
		c := twoNodes()
		c.Baud = tc.baud
		err := c.Validate()
		var ke *KeyError
		switch {
		case tc.ok && err != nil:
			t.Errorf("baud %d: %v", tc.baud, err)
		case !tc.ok && (!errors.As(err, &ke) || ke.Key != "cluster.baud"):
			t.Errorf("baud %d carries %d bytes per keepalive, a heartbeat takes %d: want an error naming cluster.baud, got %v",
				tc.baud, tc.baud/10*int(c.Timing.Keepalive/time.Millisecond)/1000, len(EncodeSerial(make([]byte, c.slotNeeded(SerialMedium)-2))), err)
		}
	}
	// Without a serial line the rate does not matter.
	c := twoNodes()
	c.Nodes[0].Serial, c.Nodes[1].Serial, c.Baud = "", "", 9600
	if err := c.Validate(); err != nil {
		t.Errorf("no serial line, baud 9600: %v", err)
	}
}

// TestSlotSizeErrorSaysEnough: the slot_size error names a size that is
// enough for this cluster, not one the next check refuses again.
func TestSlotSizeErrorSaysEnough(t *testing.T) {
	c := twoNodes()
	c.Nodes[0].Serial, c.Nodes[1].Serial = "", ""
	for i := 2; i < 64; i++ {
		c.Nodes = append(c.Nodes, Node{ID: NodeID(fmt.Sprint("n", i)), Links: []NIC{
			{Medium: "nic1", Interface: "eth1", Address: fmt.Sprintf("10.0.1.%d", i+1)},
			{Medium: "nic2", Interface: "eth2", Address: fmt.Sprintf("10.0.2.%d", i+1)}}})
	}
	c.Disks = []Disk{{Name: "disk-a", SlotSize: 512, Slots: 64}}
	need := c.slotNeeded("disk-a")
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(need)) {
		t.Fatalf("slot_size 512 for 64 nodes: want an error naming the %d bytes needed, got %v", need, err)
	}
	c.Disks[0].SlotSize = need
	if err := c.Validate(); err != nil {
		t.Fatalf("the size the error named is refused: %v", err)
	}
}

// TestValidateTableFitsTheWire: the index table travels in one frame
// (UnmarshalTable takes at most 8 addresses a row, 64 bytes each, and a
// frame is at most MaxFrame). A config whose table cannot travel is
// refused: otherwise the coordinator's table never reaches its peers
// (Encode fails, or every peer refuses it as malformed) and nobody says so.
func TestValidateTableFitsTheWire(t *testing.T) {
	big := twoNodes()
	big.Nodes[0].Serial, big.Nodes[1].Serial = "", ""
	for i := 2; i < 64; i++ {
		big.Nodes = append(big.Nodes, Node{ID: NodeID(strings.Repeat("n", 60) + fmt.Sprint(i)),
			Address: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Links: []NIC{
				{Medium: "nic1", Interface: "eth1", Address: fmt.Sprintf("10.0.1.%d", i+1)},
				{Medium: "nic2", Interface: "eth2", Address: fmt.Sprintf("10.0.2.%d", i+1)}}})
	}
	big.Disks = nil
	nics := twoNodes()
	for k := 3; k <= 9; k++ {
		for i := range nics.Nodes {
			nics.Nodes[i].Links = append(nics.Nodes[i].Links, NIC{Medium: fmt.Sprint("nic", k), Address: fmt.Sprintf("10.0.%d.%d", k, i+1)})
		}
	}
	long := twoNodes()
	long.Nodes[0].Address = strings.Repeat("h", 65)
	for _, tc := range []struct {
		name string
		c    Config
		key  string
	}{{"64 nodes, long ids", big, "nodes"}, {"9 addresses", nics, "nodes[0].links"}, {"65-byte address", long, "nodes[0].address"}} {
		c := tc.c
		c.Self = c.Nodes[0].ID
		mc := c.MachineConfig(1)
		tb := BuildTable(mc.Nodes, mc.Addresses, mc.Self, 1)
		_, encErr := NewCodec(c.Cluster, simKey).Encode(Frame{Type: MsgTable, Boot: 1, Seq: 1, Nonce: 1, From: c.Self, Medium: "nic1", Payload: tb.MarshalBinary()})
		_, decErr := UnmarshalTable(tb.MarshalBinary())
		err := c.Validate()
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key {
			t.Errorf("%s (table: encode %v, decode %v): want an error naming %s, got %v", tc.name, encErr, decErr, tc.key, err)
		}
	}
}
