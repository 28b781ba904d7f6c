package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
)

// slotArgs are the arguments of the leg-fail and leg-add control ops.
type slotArgs struct {
	Slot  int    `json:"slot"`
	Path  string `json:"path,omitempty"`
	Force bool   `json:"force,omitempty"`
}

func parseSlot(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1 {
		return 0, fmt.Errorf("leg %q: the slot is 0 or 1 (see mirrorctl status)", s)
	}
	return n, nil
}

// newLegCmd: `mirrorctl leg fail N` and `mirrorctl leg add N [--path LEG]`.
func newLegCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "leg",
		Short: "Fail or re-add one leg of the running volume",
	}
	fail := &cobra.Command{
		Use:   "fail N",
		Short: "Mark leg N (0 or 1) failed: it gets no more I/O, the volume runs degraded",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			slot, err := parseSlot(args[0])
			if err != nil {
				return err
			}
			r, err := call(g, "leg-fail", slotArgs{Slot: slot})
			if err != nil {
				return err
			}
			st, err := r.volumeHere()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "leg %d failed; the volume continues on leg %d\n", slot, 1-slot)
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	var path string
	var force bool
	add := &cobra.Command{
		Use:   "add N [--path LEG] [--force]",
		Short: "Re-add leg N (the same leg, or a replacement with --path); resync starts",
		Long: `add brings leg N back into the mirror. Without --path mirrord reopens the
leg it had; with --path it takes a replacement (a blank leg receives a full
copy). A leg that left recently receives only the chunks written since.
Follow the resync with 'mirrorctl resync --wait'.

A leg that may hold data the running volume lacks is refused: one that
holds the volume's newest generation or a newer one, or whose history
diverged from the volume's (a split brain). So is a leg with damaged
metadata or a file system. --force overwrites such a leg with a full copy
of the running volume: what it held is lost. To keep the leg's data
instead, stop mirrord and start it with both legs and --keep-leg N. A leg
of another hamirror volume is always refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			slot, err := parseSlot(args[0])
			if err != nil {
				return err
			}
			r, err := call(g, "leg-add", slotArgs{Slot: slot, Path: path, Force: force})
			if err != nil {
				return err
			}
			st, err := r.volumeHere()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "leg %d added; resync started\n", slot)
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	add.Flags().StringVar(&path, "path", "", "a replacement leg (file or block device) instead of the previous one")
	add.Flags().BoolVar(&force, "force", false, "overwrite a leg the rules refuse (newer, diverged, damaged metadata, a file system): its data is lost")
	c.AddCommand(fail, add)
	return c
}
