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
	if DeriveISID(c.InitiatorName) != c.ISID || DeriveISID("iqn.other") == c.ISID {
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

// Each LUN's session gets its own stable ISID: the same node and LUN give
// the same ISID every time (persistent reservations are bound to it), and
// two LUNs of one target, or two bases, differ (a shared ISID would make
// the second login reinstate the first session).
func TestLUNISIDStablePerNodeAndLUN(t *testing.T) {
	node := DeriveISID("iqn.2026-01.org.hamirror:node1")
	a1 := LUNISID(node, "iqn.t:a", 1)
	if a1 != LUNISID(node, "iqn.t:a", 1) {
		t.Fatal("LUN ISID not stable")
	}
	for _, other := range [][6]byte{
		LUNISID(node, "iqn.t:a", 2),
		LUNISID(node, "iqn.t:b", 1),
		LUNISID(DeriveISID("iqn.2026-01.org.hamirror:node2"), "iqn.t:a", 1),
	} {
		if other == a1 {
			t.Fatalf("ISID collision: %x", a1)
		}
	}
	if a1[0]&0xc0 != 0x80 {
		t.Fatalf("ISID type %#x, want random (0x80)", a1[0])
	}
}
