package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources/node"
)

const exampleConfig = "../../docs/cluster.example.yaml"

// TestExampleConfigIsValid: the shipped example (installed as
// /etc/hamirror/cluster.yaml.example) loads with node.LoadConfig as each
// of its nodes, covers every section of the file, and passes `mirrorctl
// config check`, which builds every resource's agent as mirrord does.
func TestExampleConfigIsValid(t *testing.T) {
	for _, id := range []string{"n1", "n2"} {
		cfg, err := node.LoadConfig(exampleConfig, heartbeat.NodeID(id))
		if err != nil {
			t.Fatalf("as %s: %v", id, err)
		}
		if cfg.Volume == nil || len(cfg.Heartbeat.Disks) != 2 || len(cfg.Heartbeat.PingTargets) == 0 ||
			len(cfg.Fencing.Keys) != 2 || cfg.Metrics.Listen == "" || cfg.ISCSI.ChapUser == "" {
			t.Errorf("the example leaves a section out: %+v", cfg)
		}
	}
	b, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"cluster", "timing", "nodes", "disks", "ping", "iscsi", "volume", "fencing",
		"group", "resources", "services", "metrics", "control"} {
		if !strings.Contains(string(b), "\n"+section+":") {
			t.Errorf("the example has no %s section", section)
		}
	}
	cfg, _ := node.LoadConfig(exampleConfig, "")
	types := map[string]bool{}
	for _, r := range cfg.Group.Resources {
		types[r.Type] = true
	}
	for _, typ := range []string{"fence", "volume", "filesystem", "vip", "postgresql", "systemd", "exec", "ocf"} {
		if !types[typ] {
			t.Errorf("the example has no %s resource", typ)
		}
	}
	requireAgents(t)
	out, err := run(t, "config", "check", exampleConfig, "--node", "n2")
	if err != nil {
		t.Fatalf("config check of the example: %v\n%s", err, out)
	}
	for _, want := range []string{"valid", "cluster pair1", "n2  address 192.0.2.12", "serial /dev/ttyS1",
		"disk heartbeat disk-a", "volume: leg 0 iscsi://10.0.3.10/", "fencing keys: n1 0x68616d6972000001 (configured)",
		"1  fence     fence", "2  volume    volume", "3  data      filesystem  5m0s", "8  mail      ocf",
		"hand-over at shutdown", "metrics: http://127.0.0.1:9105/metrics", "control socket: unix:/run/hamirror/mirrord.sock"} {
		if !strings.Contains(out, want) {
			t.Errorf("config check output lacks %q:\n%s", want, out)
		}
	}
	if out, err := run(t, "config", "check", "--quiet", exampleConfig); err != nil || strings.Contains(out, "valid") {
		t.Errorf("config check --quiet: %v\n%s", err, out)
	}
}

// requireAgents skips, loudly, where the example's resources cannot be
// built: its OCF agent (resource-agents) and PostgreSQL (postgresql-15)
// must be installed, and mirrord runs as root to switch to postgres.
func requireAgents(t *testing.T) {
	t.Helper()
	for _, p := range []string{"/usr/lib/ocf/resource.d/heartbeat/MailTo", "/usr/lib/postgresql/15/bin/pg_ctl"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("the example's resources need %s: run make deps", p)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("the example's postgresql resource runs as user postgres, which needs root")
	}
}

// TestConfigCheckNamesTheKey: a bad file fails with the key to fix.
func TestConfigCheckNamesTheKey(t *testing.T) {
	b, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	example := string(b)
	cases := []struct{ name, old, new, want string }{
		{"unknown section", "metrics:\n", "metric:\n", "metric: is not a section"},
		{"unknown key", "  io_timeout: 5s", "  io_timeuot: 5s", "volume"},
		{"one leg", "    - iscsi://10.0.4.10/iqn.2026-01.com.example:array-b/1\n  # Where", "  # Where", "volume.legs"},
		{"file leg", "    - iscsi://10.0.4.10/iqn.2026-01.com.example:array-b/1\n  # Where", "    - /dev/sdb\n  # Where", "volume.legs[1]"},
		{"bad duration", "  dead: 2s ", "  dead: 2 ", "timing.dead"},
		{"bad vip", "address: 192.0.2.10/24", "address: 192.0.2.10", "resources[1].address"},
		{"unknown resource param", "    fsck: auto ", "    fsk: auto ", "resources[0]"},
		{"order names a stranger", "order: [fence, volume, data,", "order: [fence, volume, dta,", "group.order"},
		{"duplicate fencing key", `n2: "0x68616d6972000002"`, `n2: "0x68616d6972000001"`, "fencing.keys.n2"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(example, c.old) {
				t.Fatalf("the example no longer holds %q", c.old)
			}
			f := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
			os.WriteFile(f, []byte(strings.Replace(example, c.old, c.new, 1)), 0o644)
			out, err := run(t, "config", "check", f)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), f) {
				t.Errorf("config check: %v, want an error naming %s and %q\n%s", err, f, c.want, out)
			}
		})
	}
	if _, err := run(t, "config", "check", exampleConfig, "--node", "n9"); err == nil || !strings.Contains(err.Error(), `"n9" is not in nodes`) {
		t.Errorf("--node n9: %v", err)
	}
}
