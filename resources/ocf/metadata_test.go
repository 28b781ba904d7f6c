package ocf

import (
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type raMeta struct {
	XMLName    xml.Name `xml:"resource-agent"`
	Name       string   `xml:"name,attr"`
	Version    string   `xml:"version"`
	Longdesc   string   `xml:"longdesc"`
	Shortdesc  string   `xml:"shortdesc"`
	Parameters []struct {
		Name      string `xml:"name,attr"`
		Required  string `xml:"required,attr"`
		Unique    string `xml:"unique,attr"`
		Longdesc  string `xml:"longdesc"`
		Shortdesc string `xml:"shortdesc"`
		Content   struct {
			Type    string  `xml:"type,attr"`
			Default *string `xml:"default,attr"`
		} `xml:"content"`
	} `xml:"parameters>parameter"`
	Actions []struct {
		Name     string `xml:"name,attr"`
		Timeout  string `xml:"timeout,attr"`
		Interval string `xml:"interval,attr"`
	} `xml:"actions>action"`
}

// meta-data needs no parameters, no OCF environment and no binaries (the
// cluster asks for it before anything is configured), and describes every
// parameter with a default and the actions with timeouts.
func TestMetaDataDescribesParametersAndActions(t *testing.T) {
	for _, env := range [][]string{
		nil, // nothing at all, not even OCF_ROOT
		{"OCF_ROOT=/usr/lib/ocf", "OCF_RA_VERSION_MAJOR=1", "OCF_RA_VERSION_MINOR=0"},
	} {
		cmd := exec.Command(agentPath(t), "meta-data")
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("meta-data with env %v: %v", env, err)
		}
		var m raMeta
		if err := xml.Unmarshal(out, &m); err != nil {
			t.Fatalf("meta-data is not XML: %v\n%s", err, out)
		}
		if m.Name != "volume" || m.Version == "" || strings.TrimSpace(m.Longdesc) == "" || m.Shortdesc == "" {
			t.Fatalf("resource-agent header: %+v", m)
		}
		want := map[string]string{ // name → default
			"legs": "", "listen": "", "device": "", "control": "", "keep_leg": "",
			"io_timeout": "5s", "options": "", "mirrord": "mirrord", "mirrorctl": "mirrorctl", "pidfile": "", "log": "",
		}
		for _, p := range m.Parameters {
			def, ok := want[p.Name]
			if !ok {
				t.Errorf("unexpected parameter %q", p.Name)
				continue
			}
			delete(want, p.Name)
			if p.Content.Default == nil || *p.Content.Default != def {
				t.Errorf("parameter %s: default %v, want %q", p.Name, p.Content.Default, def)
			}
			if strings.TrimSpace(p.Longdesc) == "" || p.Shortdesc == "" || p.Content.Type != "string" {
				t.Errorf("parameter %s is not described: %+v", p.Name, p)
			}
			if (p.Name == "legs") != (p.Required == "1") {
				t.Errorf("parameter %s: required=%q", p.Name, p.Required)
			}
		}
		for name := range want {
			t.Errorf("parameter %s is missing", name)
		}
		var actions []string
		for _, a := range m.Actions {
			if a.Timeout == "" {
				t.Errorf("action %s has no timeout", a.Name)
			}
			if a.Name == "monitor" && a.Interval == "" {
				t.Errorf("monitor has no interval")
			}
			actions = append(actions, a.Name)
		}
		slices.Sort(actions)
		if !slices.Equal(actions, []string{"meta-data", "monitor", "start", "stop", "validate-all"}) {
			t.Errorf("actions %v", actions)
		}
	}
}

// The meta-data is valid against the OCF DTD, checked the way ocf-tester
// checks it (xmllint --valid in resource-agents' folder).
func TestMetaDataIsValidAgainstTheOCFDTD(t *testing.T) {
	requireTools(t, "xmllint")
	const dtdDir = "/usr/share/resource-agents"
	if _, err := os.Stat(filepath.Join(dtdDir, "ra-api-1.dtd")); err != nil {
		t.Fatalf("%s/ra-api-1.dtd is missing (package resource-agents): run make deps", dtdDir)
	}
	out, err := exec.Command(agentPath(t), "meta-data").Output()
	if err != nil {
		t.Fatal(err)
	}
	lint := exec.Command("xmllint", "--noout", "--valid", "-")
	lint.Dir = dtdDir
	lint.Stdin = strings.NewReader(string(out))
	if msg, err := lint.CombinedOutput(); err != nil {
		t.Fatalf("xmllint --valid: %v\n%s", err, msg)
	}
	// A broken document is refused, so the check above can fail.
	lint = exec.Command("xmllint", "--noout", "--valid", "-")
	lint.Dir = dtdDir
	lint.Stdin = strings.NewReader(strings.Replace(string(out), "<shortdesc", "<bogus/><shortdesc", 1))
	if err := lint.Run(); err == nil {
		t.Fatal("xmllint accepted meta-data with an element the DTD does not allow")
	}
}

// Actions the agent does not implement exit OCF_ERR_UNIMPLEMENTED.
func TestUnimplementedActions(t *testing.T) {
	r := newRigNoLegs(t, plain)
	for _, a := range []string{"promote", "demote", "notify", "migrate_to", "reload", ""} {
		r.expect(a, ocfErrUnimpl)
	}
	r.expect("usage", ocfSuccess)
}

// The agent is POSIX sh (Pacemaker runs it with /bin/sh, dash on Debian)
// without the warnings shellcheck knows.
func TestAgentIsPOSIXShell(t *testing.T) {
	requireTools(t, "shellcheck")
	if out, err := exec.Command("shellcheck", "--shell=sh", agentPath(t)).CombinedOutput(); err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}
