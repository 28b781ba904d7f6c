// Package scenario runs scenario scripts, the test data of hamirror's
// pure state machines: text files of one command per line, '#' starting a
// comment, each file a subtest named after it.
//
//	func TestScenarios(t *testing.T) {
//		scenario.Run(t, "testdata/scenarios/*.txt", func(t *testing.T) func(where string, args []string) {
//			s := newSim(t)               // the package's own simulator
//			return func(where string, args []string) { s.where = where; s.run(args) }
//		})
//	}
package scenario

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Run runs every file matching glob as a subtest. For each file,
// newRunner builds a fresh runner; it is then called with each non-empty
// line split into fields, and where = "FILE:LINE" for its messages.
func Run(t *testing.T, glob string, newRunner func(t *testing.T) func(where string, args []string)) {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios match %s (%v)", glob, err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			run := newRunner(t)
			for i, line := range strings.Split(string(data), "\n") {
				line, _, _ = strings.Cut(line, "#")
				if f := strings.Fields(line); len(f) > 0 {
					run(fmt.Sprintf("%s:%d", file, i+1), f)
				}
			}
		})
	}
}
