package fence

import (
	"slices"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/iscsi"
)

func TestDeriveKeyStableDistinctNonZero(t *testing.T) {
	k := DeriveKey("prod", "node1")
	if k != DeriveKey("prod", "node1") || k == 0 {
		t.Fatalf("DeriveKey not stable or zero: %x", k)
	}
	// Golden: a node's key must not change between releases (the arrays
	// hold it).
	if k != 0x8125f00a2c330a51 {
		t.Fatalf("DeriveKey(prod, node1) = %#x changed", k)
	}
	seen := map[uint64]string{}
	for _, c := range [][2]string{{"prod", "node1"}, {"prod", "node2"}, {"test", "node1"}, {"prodn", "ode1"}, {"", "prodnode1"}, {"", ""}} {
		k := DeriveKey(c[0], c[1])
		if k == 0 {
			t.Fatalf("DeriveKey%q = 0", c)
		}
		if prev, dup := seen[k]; dup {
			t.Fatalf("DeriveKey%q = DeriveKey(%s) = %x", c, prev, k)
		}
		seen[k] = strings.Join(c[:], ",")
	}
}

func TestParseAndFormatKey(t *testing.T) {
	for in, want := range map[string]uint64{
		"0x1a2b3c4d5e6f7081": 0x1a2b3c4d5e6f7081, "1A2B3C4D5E6F7081": 0x1a2b3c4d5e6f7081,
		"0X1": 1, " 0xffffffffffffffff ": ^uint64(0),
	} {
		k, err := ParseKey(in)
		if err != nil || k != want {
			t.Errorf("ParseKey(%q) = %x, %v; want %x", in, k, err, want)
		}
		if back, err := ParseKey(FormatKey(k)); err != nil || back != k {
			t.Errorf("FormatKey(%x) = %q does not parse back", k, FormatKey(k))
		}
	}
	if FormatKey(1) != "0x0000000000000001" {
		t.Fatalf("FormatKey(1) = %q", FormatKey(1))
	}
	for _, bad := range []string{"", "0x", "0", "0x0000", "0x1ffffffffffffffff", "node1", "-1", "0x-1", "+1"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "fence key") {
			t.Errorf("ParseKey(%q): %v does not say what is wrong", bad, err)
		}
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"0x1a2b3c4d5e6f7081", "0", "", "0xg", "ffffffffffffffffff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			return
		}
		if k == 0 {
			t.Fatalf("ParseKey(%q) = 0 without an error", s)
		}
		if back, err := ParseKey(FormatKey(k)); err != nil || back != k {
			t.Fatalf("round trip of %q: %x %v", s, back, err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{Key: 1, Peers: []uint64{2}, Arrays: []Array{{Name: "a", Volume: new(iscsi.Disk)}}}
	}
	if err := (func() *Config { c := good(); return &c })().Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for what, mutate := range map[string]func(*Config){
		"fence_key":  func(c *Config) { c.Key = 0 },
		"peer key":   func(c *Config) { c.Peers = []uint64{1} },
		"no Arrays":  func(c *Config) { c.Arrays = nil },
		"Name":       func(c *Config) { c.Arrays = append(c.Arrays, c.Arrays[0]) },
		"no Volume":  func(c *Config) { c.Arrays[0].Volume = nil },
		"peer key 0": func(c *Config) { c.Peers = []uint64{0} },
	} {
		c := good()
		mutate(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: accepted", what)
			continue
		}
		if w, _, _ := strings.Cut(what, " 0"); !strings.Contains(err.Error(), w) {
			t.Errorf("%s: %v does not name it", what, err)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("New accepted an empty config")
	}
	if !slices.Equal(Result{Arrays: []ArrayResult{{Array: "a"}, {Array: "b", Unreachable: true}, {Array: "c", Err: ErrFenced}}}.Fenced(), []string{"a"}) {
		t.Fatal("Result.Fenced")
	}
}
