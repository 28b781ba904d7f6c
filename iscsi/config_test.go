package iscsi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	good := map[string]URL{
		"iscsi://host/iqn.2026-01.a:b/1":             {Host: "host:3260", Target: "iqn.2026-01.a:b", LUN: 1},
		"iscsi://alice@10.0.0.1:3261/iqn.x:y/0":      {User: "alice", Host: "10.0.0.1:3261", Target: "iqn.x:y", LUN: 0},
		"iscsi://[fd00::1]/iqn.x:y/2":                {Host: "[fd00::1]:3260", Target: "iqn.x:y", LUN: 2},
		"iscsi://[fd00::1]:3262/naa.600140511/16383": {Host: "[fd00::1]:3262", Target: "naa.600140511", LUN: 16383},
	}
	for s, want := range good {
		u, err := ParseURL(s)
		if err != nil || u != want {
			t.Errorf("ParseURL(%s) = %+v, %v; want %+v", s, u, err, want)
		}
		if u2, err := ParseURL(u.String()); err != nil || u2 != u {
			t.Errorf("%s does not round-trip: %v", u.String(), err)
		}
	}
	bad := []string{
		"nbd://host/iqn.x:y/1", "iscsi:///iqn.x:y/1", "iscsi://host/iqn.x:y", "iscsi://host/iqn.x:y/1/2",
		"iscsi://host/notaniqn/1", "iscsi://host/iqn.x:y/lun", "iscsi://host/iqn.x:y/16384", "iscsi://host/iqn.x:y/1?x=1",
	}
	for _, s := range bad {
		if _, err := ParseURL(s); err == nil {
			t.Errorf("ParseURL(%s) accepted", s)
		}
	}
	_, err := ParseURL("iscsi://alice:hunter2@host/iqn.x:y/1")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("password in URL: %v (must be refused without echoing it)", err)
	}
}

func TestConfigDefaultsAndValidate(t *testing.T) {
	var c Config
	c.EnsureDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Timeout != 5*time.Second || c.PingInterval != 2500*time.Millisecond || c.QueueDepth != 128 {
		t.Fatalf("defaults %+v", c)
	}
	if !strings.HasPrefix(c.InitiatorName, "iqn.2026-01.org.hamirror:") {
		t.Fatalf("default IQN %s", c.InitiatorName)
	}
	// Stable per node: the same name gives the same ISID, another name another.
	if DeriveISID(c.InitiatorName, PurposeVolume) != c.ISID || DeriveISID("iqn.other", PurposeVolume) == c.ISID {
		t.Fatal("ISID not derived from the initiator name")
	}
	if c.ISID[0]&0xc0 != 0x80 {
		t.Fatalf("ISID type %#x, want random (0x80)", c.ISID[0])
	}
	bad := []func(*Config){
		func(c *Config) { c.InitiatorName = "host1" },
		func(c *Config) { c.Timeout = time.Millisecond },
		func(c *Config) { c.FirstBurstLength = c.MaxBurstLength + 1 },
		func(c *Config) { c.MaxRecvDataSegmentLength = 100 },
		func(c *Config) { c.QueueDepth = -1 },
		func(c *Config) { c.Secret, c.SecretFile = "a", "b" },
	}
	for i, f := range bad {
		c := Config{}
		c.EnsureDefaults()
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("bad config %d accepted", i)
		}
	}
}

func TestCHAPConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "s")
	os.WriteFile(file, []byte("from-file-secret\n"), 0o600)
	c := Config{SecretFile: file}
	ch, err := c.chap("bob")
	if err != nil || ch.user != "bob" || ch.secret != "from-file-secret" {
		t.Fatalf("secret file: %+v %v", ch, err)
	}
	if ch, err := (&Config{}).chap(""); err != nil || ch != nil {
		t.Fatalf("no CHAP: %+v %v", ch, err)
	}
	if _, err := (&Config{Secret: "x"}).chap(""); err == nil {
		t.Fatal("secret without user accepted")
	}
	if _, err := (&Config{User: "u"}).chap(""); err == nil {
		t.Fatal("user without secret accepted")
	}
	if _, err := (&Config{TargetSecret: "t"}).chap(""); err == nil {
		t.Fatal("mutual CHAP without our own credentials accepted")
	}
	if _, err := (&Config{User: "u", SecretFile: filepath.Join(dir, "missing")}).chap(""); err == nil {
		t.Fatal("missing secret file accepted")
	}
}

func TestIsLegSpec(t *testing.T) {
	if !IsLegSpec("iscsi://h/iqn.x:y/1") || IsLegSpec("/dev/sdb") || IsLegSpec("nbd://x") {
		t.Fatal("IsLegSpec")
	}
}

// Each LUN's session gets its own stable ISID: the same node, purpose and
// LUN give the same ISID every time (persistent reservations are bound to
// it), and two LUNs of one target, two bases or two purposes differ (a
// shared ISID would make the second login reinstate the first session).
func TestSessionISIDStablePerNodePurposeAndLUN(t *testing.T) {
	node := DeriveISID("iqn.2026-01.org.hamirror:node1", PurposeVolume)
	a1 := SessionISID(node, PurposeVolume, "iqn.t:a", 1)
	if a1 != SessionISID(node, PurposeVolume, "iqn.t:a", 1) {
		t.Fatal("session ISID not stable")
	}
	others := [][6]byte{
		SessionISID(node, PurposeVolume, "iqn.t:a", 2),
		SessionISID(node, PurposeVolume, "iqn.t:b", 1),
		SessionISID(DeriveISID("iqn.2026-01.org.hamirror:node2", PurposeVolume), PurposeVolume, "iqn.t:a", 1),
	}
	for p := PurposeDiskHeartbeat; p < numPurposes; p++ {
		// Derived bases differ per purpose, and so do sessions from one
		// explicit base.
		others = append(others, SessionISID(DeriveISID("iqn.2026-01.org.hamirror:node1", p), p, "iqn.t:a", 1),
			SessionISID(node, p, "iqn.t:a", 1))
	}
	seen := map[[6]byte]int{a1: -1}
	for i, o := range others {
		if j, dup := seen[o]; dup {
			t.Fatalf("ISID collision between %d and %d: %x", i, j, o)
		}
		seen[o] = i
		if o[0]&0xc0 != 0x80 {
			t.Fatalf("ISID type %#x, want random (0x80)", o[0])
		}
	}
}

// The volume's ISID is the one earlier releases used: a node upgraded in
// place keeps its I_T nexus, so an array that keeps registrations across
// sessions (SPC-4) still knows it.
func TestVolumeISIDUnchanged(t *testing.T) {
	const name = "iqn.2026-01.org.hamirror:node1"
	if got := DeriveISID(name, PurposeVolume); got != [6]byte{0xb4, 0xa9, 0xe9, 0x77, 0x4a, 0x02} {
		t.Fatalf("volume base ISID %#v changed", got)
	}
	if got := SessionISID(DeriveISID(name, PurposeVolume), PurposeVolume, "iqn.t:a", 1); got != [6]byte{0xa2, 0x55, 0x7e, 0x57, 0xd9, 0xc7} {
		t.Fatalf("volume session ISID %#v changed", got)
	}
}

func TestPurposeNamesAndValidation(t *testing.T) {
	for p, want := range map[Purpose]string{PurposeVolume: "volume", PurposeDiskHeartbeat: "disk-heartbeat",
		PurposeTool: "tool", PurposeReadOnly: "read-only", 9: "purpose(9)"} {
		if p.String() != want {
			t.Errorf("Purpose(%d) = %q, want %q", p, p, want)
		}
	}
	c := Config{Purpose: 9}
	c.EnsureDefaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "Purpose") {
		t.Fatalf("undefined purpose: %v", err)
	}
}
