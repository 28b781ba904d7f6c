// Command mirrord is hamirror's daemon: it assembles the mirrored volume,
// serves it over NBD (unix or TCP sockets, or the kernel's /dev/nbdN), runs
// cluster membership and the resource group, and answers mirrorctl on a
// control socket.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mirrord:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "mirrord",
		Short:         "hamirror daemon: mirrored volume, NBD server, heartbeat and failover",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addClusterMode(root) // mirrord --config FILE: membership (cluster.go)
	// Each subcommand lives in its own file; add new ones here.
	root.AddCommand(
		newVolumeCmd(),
		newServicesCmd(),
	)
	return root
}
