// Command mirrorctl is hamirror's administration tool: it creates and
// examines legs, and talks to a running mirrord over its control socket for
// status, resync, verify, leg replacement, moves and standby.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitCode is returned by commands that want a specific exit status without
// printing an error (e.g. "status" on a degraded volume in scripts).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func main() {
	root := newRootCmd()
	if err := root.Execute(); err != nil {
		if code, ok := err.(exitCode); ok {
			os.Exit(int(code))
		}
		fmt.Fprintln(os.Stderr, "mirrorctl:", err)
		os.Exit(1)
	}
}

// globals are the flags every subcommand shares.
type globals struct {
	control string // "unix:PATH" of mirrord's control socket
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "mirrorctl",
		Short:         "Administer a hamirror mirrored volume and HA pair",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.control, "control", "unix:/run/hamirror/mirrord.sock", "mirrord control socket (unix:PATH)")
	// Each subcommand lives in its own file; add new ones here.
	root.AddCommand(
		newCreateCmd(g),
		newExamineCmd(g),
		newStatusCmd(g),
		newLegCmd(g),
		newResyncCmd(g),
		newVerifyCmd(g),
		newMoveCmd(g),
		newStandbyCmd(g, true),
		newStandbyCmd(g, false),
		newMaintenanceCmd(g),
		newResourceCmd(g),
		newCleanupCmd(g),
		newConfigCmd(),
		newNodesCmd(g),
		newNodeCmd(g),
		newLogCmd(g),
		newTrafficCmd(g),
		newISCSICmd(),
	)
	return root
}
