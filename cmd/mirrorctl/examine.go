package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/legopts"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
)

// newExamineCmd: `mirrorctl examine [--json] LEG`.
func newExamineCmd(_ *globals) *cobra.Command {
	var asJSON bool
	lf := legopts.Flags{Purpose: iscsi.PurposeTool}
	c := &cobra.Command{
		Use:   "examine [--json] LEG",
		Short: "Print one leg's mirror metadata (like mdadm --examine)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := mirror.OpenLeg(args[0], lf.LegOptions(true))
			if err != nil {
				return err
			}
			defer l.Close()
			info, err := mirror.Examine(l)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			fmt.Fprint(cmd.OutOrStdout(), info.String())
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	lf.Add(c.Flags(), true)
	return c
}
