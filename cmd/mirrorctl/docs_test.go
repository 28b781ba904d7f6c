package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/viper"

	"github.com/hamirror/hamirror/cmd/internal/doccheck"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/agents"
	"github.com/hamirror/hamirror/resources/node"
)

// The operator documents whose mirrorctl commands must parse, and those
// whose cluster-file keys must exist (docs/HA.md is the design, which
// names keys that are planned, not built).
var (
	commandDocs = []string{"../../docs/INSTALL.md", "../../docs/OPERATIONS.md", "../../docs/PACEMAKER.md", "../../README.md"}
	keyDocs     = []string{"../../docs/INSTALL.md", "../../docs/OPERATIONS.md", "../../README.md"}
	// exampleFile is the shipped, commented cluster file: the base the key
	// probes change one key of.
	exampleFile = "../../docs/cluster.example.yaml"
	// sections are the cluster file's top-level keys (node.LoadConfig's).
	sections = []string{"cluster", "timing", "nodes", "disks", "ping", "iscsi", "volume", "fencing",
		"metrics", "log", "control", "group", "resources", "services"}
)

func readDoc(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every mirrorctl command line the documents show parses with the real
// command tree: no unknown subcommand or flag, and, in code blocks, flag
// values and arguments as the command takes them.
func TestDocsMirrorctlCommandsParse(t *testing.T) {
	n := 0
	for _, f := range commandDocs {
		for _, c := range doccheck.Commands(filepath.Base(f), readDoc(t, f), "mirrorctl") {
			n++
			if err := doccheck.Check(newRootCmd(), c); err != nil {
				t.Errorf("%v\n\t%v", c, err)
			}
		}
	}
	t.Logf("%d mirrorctl command lines checked", n)
	// The guides show well over a hundred; a handful means the extraction
	// broke and the test would pass on nothing.
	if n < 60 {
		t.Fatalf("found only %d mirrorctl commands in %v", n, commandDocs)
	}
}

// The command the cluster's refusals name to force a start the legs
// cannot settle (split brain, lone leg, blank leg) exists, and the
// operations guide shows how to use it.
func TestDocsForcingCommand(t *testing.T) {
	cs := doccheck.Commands("hint", []byte("`"+node.ForceCommand+"`"), "mirrorctl")
	if len(cs) != 1 {
		t.Fatalf("found %v in %q", cs, node.ForceCommand)
	}
	if err := doccheck.Check(newRootCmd(), cs[0]); err != nil {
		t.Errorf("the refusals name %q: %v", node.ForceCommand, err)
	}
	verb := strings.TrimSuffix(node.ForceCommand, " N")
	if !strings.Contains(string(readDoc(t, "../../docs/OPERATIONS.md")), verb+" ") {
		t.Errorf("docs/OPERATIONS.md does not show %q", verb)
	}
}

// The checker itself refuses what a stale document would say, and passes
// the shell forms the documents use.
func TestDocsCheckerCatchesStaleCommands(t *testing.T) {
	bad := "```sh\n" +
		"mirrorctl frob\n" +
		"mirrorctl leg frob 1\n" +
		"mirrorctl status --frob\n" +
		"mirrorctl leg add\n" +
		"mirrorctl log --since\n" +
		"mirrorctl leg\n" +
		"mirrorctl standby n1 n2\n" +
		"mirrorctl resync --wait && mirrorctl verify --repiar\n" +
		"```\n" +
		"Prose: `mirrorctl frob`, `mirrorctl status --frob`, `mirrorctl leg frob`.\n"
	cs := doccheck.Commands("bad.md", []byte(bad), "mirrorctl")
	var failed int
	for _, c := range cs {
		if err := doccheck.Check(newRootCmd(), c); err == nil {
			if c.Text != "mirrorctl resync --wait && mirrorctl verify --repiar" || c.Args[0] != "resync" {
				t.Errorf("%v: accepted", c)
			}
		} else {
			failed++
		}
	}
	if len(cs) != 12 || failed != 11 {
		t.Errorf("found %d commands (want 12), %d refused (want 11): %v", len(cs), failed, cs)
	}
	good := "```sh\n" +
		"mirrorctl status --json | jq .group   # a comment with mirrorctl frob\n" +
		"mirrorctl leg add 1 --force && mirrorctl resync --wait; mirrorctl verify --wait --repair\n" +
		"bin/mirrorctl --control unix:/run/x.sock cleanup db\n" +
		"mirrorctl log write \"a note: with # and | inside\"\n" +
		"mirrorctl log --since 1h \\\n    --node n2 -f\n" +
		"mirrorctl status --json > /tmp/st.json 2>&1 </dev/null; mirrorctl nodes >>log\n" +
		"```\n" +
		"```text\nmirrorctl: output, not a command --frob\n```\n" +
		"Prose: `mirrorctl cleanup [NAME]`, `mirrorctl log\n--since`, `mirrorctl maintenance on|off`.\n"
	cs = doccheck.Commands("good.md", []byte(good), "mirrorctl")
	for _, c := range cs {
		if err := doccheck.Check(newRootCmd(), c); err != nil {
			t.Errorf("%v: %v", c, err)
		}
	}
	if len(cs) != 12 {
		t.Errorf("found %d commands, want 12: %v", len(cs), cs)
	}
}

// Every cluster-file key the documents name (`volume.io_timeout`,
// `nodes[].serial`, `resources[].fsck`, the keys of a ```yaml block) is one
// the loader takes: mirrord's node.FromViper, and for a resource's
// parameters the agent constructor that `mirrorctl config check` and
// mirrord call.
func TestDocsClusterKeysExist(t *testing.T) {
	p := newKeyProbe(t)
	n := 0
	for _, f := range keyDocs {
		keys, err := doccheck.Keys(filepath.Base(f), readDoc(t, f), sections)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			n++
			if err := p.exists(k.Path); err != nil {
				t.Errorf("%v: %v", k, err)
			}
		}
	}
	t.Logf("%d cluster-file keys checked", n)
	if n < 40 {
		t.Fatalf("found only %d cluster-file keys in %v", n, keyDocs)
	}
	p.reportUndecided(t)
}

// The probe tells known keys from unknown ones, present in the example or
// not, in every kind of section.
func TestDocsKeyProbe(t *testing.T) {
	p := newKeyProbe(t)
	for _, k := range []string{"volume.io_timeout", "volume.fuse", "log.level", "iscsi.initiator_name",
		"nodes[].serial", "nodes[].slot", "disks[].slot_size", "resources[].fsck", "resources[].monitor_timeout",
		"group.failback", "services.rejoin_hold", "cluster.failback", "fencing.keys"} {
		if err := p.exists(keyPath(k)); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	for _, k := range []string{"volume.no_such_key", "group.no_such_key", "cluster.no_such_key", "log.no_such_key",
		"nodes[].no_such_key", "nodes[].links[].no_such_key", "resources[].no_such_key", "services.no_such_key",
		"no_such_section.key", "nodes.serial", "volume[].legs"} {
		if err := p.exists(keyPath(k)); err == nil {
			t.Errorf("%s: accepted", k)
		}
	}
	md := "```yaml\nvolume:\n  io_timeout: 5s\n  no_such_key: 1\nresources:\n  - {name: x, type: exec, bogus: 1}\n```\n" +
		"`cluster.yaml`, `cluster.key` are files; `volume.legs` and `nodes[].links` keys.\n"
	keys, err := doccheck.Keys("t.md", []byte(md), sections)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, strings.Join(k.Path, "."))
	}
	if want := "volume.legs nodes.[].links resources.[].bogus resources.[].name resources.[].type volume.io_timeout volume.no_such_key"; strings.Join(got, " ") != want {
		t.Errorf("keys %q, want %q", strings.Join(got, " "), want)
	}
}

func keyPath(k string) []string {
	return strings.Split(strings.ReplaceAll(k, "[]", ".[]"), ".")
}

// keyProbe loads the shipped example with one key changed.
type keyProbe struct {
	settings map[string]any
	// baseline is each resources[i]'s agent construction error in the
	// unchanged example (a parameter check on an entry whose agent cannot
	// be built here, such as an OCF agent not installed, cannot tell).
	baseline  map[string]error
	undecided []string
}

func newKeyProbe(t *testing.T) *keyProbe {
	t.Helper()
	v := viper.New()
	v.SetConfigFile(exampleFile)
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	p := &keyProbe{settings: v.AllSettings(), baseline: map[string]error{}}
	cfg, err := load(p.settings)
	if err != nil {
		t.Fatalf("the shipped example does not load: %v", err)
	}
	for _, r := range cfg.Group.Resources {
		if r.Type != resources.TypeFence && r.Type != resources.TypeVolume {
			_, p.baseline[r.Key] = agents.New(r.Key, r.Type, r.Name, r.Params, agents.Env{})
		}
	}
	return p
}

func load(settings map[string]any) (*node.Config, error) {
	v := viper.New()
	if err := v.MergeConfigMap(settings); err != nil {
		return nil, err
	}
	return node.FromViper(v, "n1")
}

// unknownKey reports whether a loader error says a key is not one it
// takes (every other error is about a value: the key exists).
func unknownKey(err error) bool {
	m := err.Error()
	return strings.Contains(m, "invalid keys") || strings.Contains(m, "unknown key") || strings.Contains(m, "is not a section")
}

// exists returns nil when the loader takes the key at path in some copy
// of the example (a value it dislikes still proves the key).
func (p *keyProbe) exists(path []string) error {
	vs, err := doccheck.Variants(p.settings, path, "1s")
	if err != nil {
		return err
	}
	var why []string
	for _, v := range vs {
		if v.Present {
			return nil // the example holds it and loads strictly
		}
		cfg, err := load(v.Settings)
		if err != nil {
			if !unknownKey(err) {
				return nil
			}
			why = append(why, err.Error())
			continue
		}
		if path[0] != "resources" {
			return nil
		}
		key := fmt.Sprintf("resources[%s]", v.Path[1])
		for _, r := range cfg.Group.Resources {
			if r.Key != key {
				continue
			}
			if err := p.baseline[key]; err != nil {
				p.undecided = append(p.undecided, fmt.Sprintf("%s on %s (%s: %v)", strings.Join(path, "."), key, r.Type, err))
				continue
			}
			if _, err := agents.New(r.Key, r.Type, r.Name, r.Params, agents.Env{}); err == nil || !unknownKey(err) {
				return nil
			} else {
				why = append(why, err.Error())
			}
		}
	}
	if len(why) == 0 {
		return fmt.Errorf("no resource of the example could check it here")
	}
	return fmt.Errorf("the loader does not take it: %s", why[0])
}

// reportUndecided names the checks an agent missing on this machine kept
// from deciding (each key was still decided by another resource, or it
// failed above).
func (p *keyProbe) reportUndecided(t *testing.T) {
	for _, u := range p.undecided {
		t.Logf("not checked against this resource (its agent cannot be built here): %s", u)
	}
}
