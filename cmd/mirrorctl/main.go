// Command mirrorctl is hamirror's administration tool: it creates and
// examines legs, and talks to a running mirrord over its control socket for
// status, resync, verify, leg replacement, moves and standby.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/mandoc"
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
		Use:   "mirrorctl",
		Short: "Administer a hamirror mirrored volume and HA pair",
		Long: `mirrorctl administers hamirror: two servers, two iSCSI arrays, one mirrored
volume served over NBD, and a resource group (file system, virtual IP,
database, applications) that runs on one server and moves to the other
when it fails. mirrord is the daemon on each server; mirrorctl talks to
the local one over its control socket (root only), or works on legs and
arrays directly (create, examine, iscsi) and on files (config check).

Files:
  /etc/hamirror/cluster.yaml            the cluster file (see cluster.yaml.example)
  /run/hamirror/mirrord.sock            mirrord's control socket (--control)
  /var/lib/hamirror                     mirrord's state (cluster.state_dir)

Exit status: 0 on success, 1 on an error (the message says what to do),
2 from status when something needs attention, 3 from verify --wait when
the legs differ. See mirrorctl COMMAND --help, and mirrord(8).`,
		Example: `  mirrorctl status                 the whole picture: nodes, group, volume
  mirrorctl move                   hand the group to the peer
  mirrorctl standby; mirrorctl unstandby
                                   keep this node out; let it back in
  mirrorctl cleanup [NAME]         forget failures, unblock the group
  mirrorctl leg add 1; mirrorctl resync --wait
                                   bring leg 1 back and follow its resync
  mirrorctl config check /etc/hamirror/cluster.yaml --node n1
  mirrorctl log --follow           the cluster's management log`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// `mirrorctl completion bash` works; man pages leave it out.
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
	}
	root.PersistentFlags().StringVar(&g.control, "control", "unix:/run/hamirror/mirrord.sock", "mirrord control socket (unix:PATH)")
	root.AddGroup(
		&cobra.Group{ID: "cluster", Title: "The cluster and its resource group (mirrord --config):"},
		&cobra.Group{ID: "volume", Title: "The volume, its legs and arrays:"},
		&cobra.Group{ID: "services", Title: "Cluster services:"},
		&cobra.Group{ID: "setup", Title: "Setting up:"},
	)
	// Each subcommand lives in its own file; add new ones here.
	for group, cmds := range map[string][]*cobra.Command{
		"cluster": {newStatusCmd(g), newMoveCmd(g), newStandbyCmd(g, true), newStandbyCmd(g, false),
			newMaintenanceCmd(g), newResourceCmd(g), newCleanupCmd(g), newNodesCmd(g)},
		"volume":   {newLegCmd(g), newVolumeCmd(g), newResyncCmd(g), newVerifyCmd(g), newExamineCmd(g), newISCSICmd()},
		"services": {newLogCmd(g), newTrafficCmd(g), newNodeCmd(g)},
		"setup":    {newCreateCmd(g), newConfigCmd()},
	} {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	root.AddCommand(mandoc.Command())
	return root
}
