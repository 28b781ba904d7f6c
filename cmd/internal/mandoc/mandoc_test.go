package mandoc

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestPagesFollowTheCommands: `man DIR` writes one section-8 page per
// visible command (hidden ones, `man` itself and `help` get none), each
// with the command's own help, dated by SOURCE_DATE_EPOCH.
func TestPagesFollowTheCommands(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000") // 2023-11-14
	noop := func(*cobra.Command, []string) error { return nil }
	root := &cobra.Command{Use: "tool", Short: "A tool", Long: "tool does things.", Example: "  tool go --fast",
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true}} // as mirrord's and mirrorctl's roots
	run := &cobra.Command{Use: "go [--fast]", Short: "Go somewhere", Long: "go goes.", RunE: noop}
	run.Flags().Bool("fast", false, "go fast")
	root.AddCommand(run, &cobra.Command{Use: "secret", Hidden: true, RunE: noop}, Command())
	dir := filepath.Join(t.TempDir(), "man8")
	root.SetArgs([]string{"man", dir})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if strings.Join(names, " ") != "tool-go.8 tool.8" {
		t.Errorf("pages %v, want tool.8 and tool-go.8 only", names)
	}
	page, err := os.ReadFile(filepath.Join(dir, "tool-go.8"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`.TH "TOOL-GO" "8" "Nov 2023" "hamirror" "hamirror manual"`, "go goes.", "tool go [--fast]", "go fast"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("tool-go.8 lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(string(page), "Auto generated") {
		t.Error("the page carries cobra's auto-generated tag")
	}
	if top, _ := os.ReadFile(filepath.Join(dir, "tool.8")); !strings.Contains(string(top), ".SH EXAMPLE") || !strings.Contains(string(top), "tool go --fast") {
		t.Errorf("tool.8 has no EXAMPLE section:\n%s", top)
	}
}

// TestManNeedsADirectory: a directory that cannot be made is an error
// naming it, not a crash.
func TestManNeedsADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	root := &cobra.Command{Use: "tool", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(Command())
	root.SetArgs([]string{"man", filepath.Join(f, "man8")})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), f) {
		t.Errorf("man into a path under a file: %v", err)
	}
}
