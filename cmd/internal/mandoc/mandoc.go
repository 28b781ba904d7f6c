package mandoc

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Command is the hidden `man DIR` command of the root it is added to.
func Command() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the manual pages (section 8) of every command into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fmt.Errorf("the manual pages' directory: %w", err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			h := &doc.GenManHeader{Section: "8", Source: "hamirror", Manual: "hamirror manual"}
			if err := doc.GenManTree(root, h, args[0]); err != nil {
				return fmt.Errorf("writing the manual pages of %s: %w", root.Name(), err)
			}
			return nil
		},
	}
}
