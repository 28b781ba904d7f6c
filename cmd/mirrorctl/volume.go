package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/resources/node"
)

// newVolumeCmd: `mirrorctl volume keep-leg N`, the cluster's forcing
// command.
func newVolumeCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "volume",
		Short: "Force the cluster's volume where the legs cannot settle it",
	}
	keep := &cobra.Command{
		Use:   "keep-leg N",
		Short: "Start the volume once keeping leg N's data (split brain, lone leg, blank leg)",
		Long: `keep-leg is the cluster's --keep-leg. hamirror refuses to start the volume
when the legs do not prove which copy is newest: a split brain (both legs
written separately), a lone leg not provably the newest (the other array
unreachable), a leg whose metadata cannot be read, or a blank replacement
leg. Choose the leg to keep (mirrorctl examine on each leg), then run
keep-leg on the node that should run the group: the next start of the
volume there keeps leg N's data, and the other leg is overwritten by a
resync (a missing or blank one once it is added). The choice holds for
that one start only, and is written to the management log. keep-leg also
clears this node's failures (as mirrorctl cleanup) so that it starts the
group.

It is refused while the group runs, starts or stops on any node, while this
node is fenced, blocked or in standby, and while a live peer could start
the group first without the forced leg (run mirrorctl standby there first,
and mirrorctl unstandby there afterwards).`,
		Example: `  mirrorctl examine iscsi://10.0.3.10/iqn.2026-01.com.example:array-a/1
  mirrorctl examine iscsi://10.0.4.10/iqn.2026-01.com.example:array-b/1
  mirrorctl volume keep-leg 1      keep leg 1's data; leg 0 is resynced from it`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			slot, err := parseSlot(args[0])
			if err != nil {
				return err
			}
			return groupCommand(cmd, g, "keep-leg", slotArgs{Slot: slot}, func(st node.Status) string {
				return fmt.Sprintf("the next start of the volume on %s keeps leg %d's data (once); the group starts there (mirrorctl status follows it)", st.Node, slot)
			})
		},
	}
	c.AddCommand(keep)
	return c
}
