package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamirror/hamirror/resources/node"
)

// TestRenderNodeGolden renders status answers recorded from the real pair
// lab (testdata/node-*.json, rewritten by `go test -run
// TestGroupCommandsOnARealPair -update`) and compares them with the
// reviewed renderings (testdata/node-*.golden, rewritten with -update).
func TestRenderNodeGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/node-*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded status answers in testdata: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var st node.Status
			if err := json.Unmarshal(raw, &st); err != nil {
				t.Fatalf("%s no longer decodes as node.Status (re-record it with -update): %v", f, err)
			}
			var b bytes.Buffer
			if err := renderNode(&b, st); err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(f, ".json") + ".golden"
			if *updateGolden {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != string(want) {
				t.Errorf("rendering of %s differs from %s (review, then -update):\n--- got\n%s--- want\n%s", f, golden, b.String(), want)
			}
		})
	}
}

// indentJSON is raw, indented, ending with a newline.
func indentJSON(raw []byte) ([]byte, error) {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}
