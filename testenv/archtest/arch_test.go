// Package archtest guards hamirror's architecture: dependencies between the
// top-level packages stay one-way (cmd → resources → heartbeat, mirror →
// iscsi; nothing imports cmd) and every package has a doc comment.
package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/hamirror/hamirror"

type pkg struct {
	ImportPath string
	Imports    []string
	Doc        string
	Name       string
	GoFiles    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// forbidden maps a package prefix to the prefixes it must never import.
var forbidden = map[string][]string{
	"mirror":    {"heartbeat", "resources", "cmd"},
	"iscsi":     {"mirror", "heartbeat", "resources", "cmd"},
	"heartbeat": {"mirror", "resources", "cmd"},
	"resources": {"cmd"},
	"testenv":   {"cmd"},
}

func TestImportsAreOneWay(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		top, _, _ := strings.Cut(rel, "/")
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			irel := strings.TrimPrefix(imp, module+"/")
			for _, bad := range forbidden[top] {
				if irel == bad || strings.HasPrefix(irel, bad+"/") {
					t.Errorf("%s imports %s: %s/ must not depend on %s/", rel, irel, top, bad)
				}
			}
		}
	}
}

func TestEveryPackageHasDoc(t *testing.T) {
	for _, p := range listPackages(t) {
		if len(p.GoFiles) == 0 {
			continue // test-only package, like this one
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment (add a doc.go that shows how it is used)", p.ImportPath)
		}
	}
}
