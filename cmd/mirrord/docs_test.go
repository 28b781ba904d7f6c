package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hamirror/hamirror/cmd/internal/doccheck"
)

// Every mirrord command line the operator documents show parses with the
// real command tree (cmd/mirrorctl/docs_test.go does the same for
// mirrorctl and checks the cluster-file keys).
func TestDocsMirrordCommandsParse(t *testing.T) {
	n := 0
	for _, f := range []string{"../../docs/INSTALL.md", "../../docs/OPERATIONS.md", "../../docs/PACEMAKER.md", "../../README.md"} {
		md, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range doccheck.Commands(filepath.Base(f), md, "mirrord") {
			n++
			if err := doccheck.Check(newRootCmd(), c); err != nil {
				t.Errorf("%v\n\t%v", c, err)
			}
		}
	}
	t.Logf("%d mirrord command lines checked", n)
	if n < 10 {
		t.Fatalf("found only %d mirrord commands: the extraction is broken", n)
	}
	bad := "```sh\nmirrord volume --leg a --frob\nmirrord frob\nmirrord --confg x\nmirrord volume --keep-leg\n```\n"
	for _, c := range doccheck.Commands("bad.md", []byte(bad), "mirrord") {
		if err := doccheck.Check(newRootCmd(), c); err == nil {
			t.Errorf("%v: accepted", c)
		}
	}
}
