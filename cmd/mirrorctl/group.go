package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/resources/node"
)

// The resource group's operator commands. Each runs on the node whose
// mirrord the control socket reaches; mirrord answers with its status,
// which the command shows.

// groupCommand sends op and prints what changed and the group after it.
func groupCommand(cmd *cobra.Command, g *globals, op string, args any, done func(node.Status) string) error {
	r, err := call(g, op, args)
	if err != nil {
		return err
	}
	if r.Node == nil {
		return notANode(op)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintln(out, done(*r.Node))
	return printGroup(out, *r.Node)
}

// completeResources completes a resource name from the running group.
func completeResources(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		r, err := getStatus(g)
		if err != nil || r.Node == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, res := range r.Node.Group.Resources {
			names = append(names, res.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeNodes completes a node ID of the cluster.
func completeNodes(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		r, err := getStatus(g)
		if err != nil || r.Node == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var ids []string
		for _, n := range r.Node.Cluster.Nodes {
			ids = append(ids, string(n.ID))
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}

// newMoveCmd: `mirrorctl move [NODE]`.
func newMoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "move [NODE]",
		Short: "Move the resource group away from this node (to NODE, its peer)",
		Long: `move stops the resource group on this node, in reverse order, and hands it
to the peer, which starts it without fencing (a clean hand-over). This node
stays out of the election until the peer runs the group, then it may run it
again; the group stays on the peer (no automatic fail-back unless
cluster.failback is set). If no peer can take the group, nothing moves and
move says why.

Run it on the node that runs the group. NODE, if given, must be the peer:
a two-node pair has only one place to move to.`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeNodes(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a struct {
				Node heartbeat.NodeID `json:"node,omitempty"`
			}
			if len(args) == 1 {
				a.Node = heartbeat.NodeID(args[0])
			}
			return groupCommand(cmd, g, "move", a, func(st node.Status) string {
				to := "a peer"
				if a.Node != "" {
					to = string(a.Node)
				}
				return fmt.Sprintf("moving the group from %s to %s: it stops here, then starts there (mirrorctl status follows it)", st.Node, to)
			})
		},
	}
}

// newStandbyCmd: `mirrorctl standby [NODE]` and `mirrorctl unstandby [NODE]`.
func newStandbyCmd(g *globals, on bool) *cobra.Command {
	use, short, long := "standby [NODE]", "Keep this node from running the resource group (persistent)",
		`standby takes this node out: if the group runs here it stops (the peer takes
it over cleanly), and this node never runs it again until 'mirrorctl
unstandby', across mirrord restarts and reboots (the flag is kept in
cluster.state_dir). Use it before maintenance of a node's hardware.`
	if !on {
		use, short, long = "unstandby [NODE]", "Let this node run the resource group again",
			`unstandby clears the standby flag of this node: it may run the group again
(it does not take the group back from a peer that runs it, unless
cluster.failback is set).`
	}
	long += `

NODE, if given, must be this node: the flag belongs to the node that keeps
it. To put the peer in standby, run the command on the peer.`
	return &cobra.Command{
		Use:               use,
		Short:             short,
		Long:              long,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeNodes(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			verb := strings.Fields(use)[0]
			if len(args) == 1 {
				if err := checkThisNode(g, verb, args[0]); err != nil {
					return err
				}
			}
			return groupCommand(cmd, g, "standby", map[string]bool{"on": on}, func(st node.Status) string {
				if on {
					return fmt.Sprintf("%s is in standby: it does not run the group until mirrorctl unstandby", st.Node)
				}
				return fmt.Sprintf("%s is out of standby: it may run the group again", st.Node)
			})
		},
	}
}

// checkThisNode refuses a command naming another node than the one
// mirrord runs: standby is a flag of the node that keeps it.
func checkThisNode(g *globals, verb, id string) error {
	r, err := getStatus(g)
	if err != nil {
		return err
	}
	if r.Node == nil {
		return notANode(verb)
	}
	self := r.Node.Node
	if heartbeat.NodeID(id) == self {
		return nil
	}
	var ids []string
	for _, n := range r.Node.Cluster.Nodes {
		ids = append(ids, string(n.ID))
	}
	if !slices.Contains(ids, id) {
		return fmt.Errorf("%s %s: %q is not a node of cluster %s (nodes: %s)", verb, id, id, r.Node.Cluster.Cluster, strings.Join(ids, ", "))
	}
	return fmt.Errorf("%s %s: this is %s; run `mirrorctl %s` on %s (each node keeps its own standby flag)", verb, id, self, verb, id)
}

// newMaintenanceCmd: `mirrorctl maintenance on|off`.
func newMaintenanceCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "maintenance on|off",
		Short: "Pause (on) or resume (off) monitors and actions of the group on this node",
		Long: `maintenance on pauses the resource group's monitors and actions on this node:
resources are left exactly as they are, failures are neither detected nor
acted on, so a database can be restarted by hand without the cluster
moving it. maintenance off resumes them and checks every running resource
at once. Fencing still works: a node fenced by its peer stops everything
even in maintenance.`,
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			on := args[0] == "on"
			return groupCommand(cmd, g, "maintenance", map[string]bool{"on": on}, func(st node.Status) string {
				if on {
					return fmt.Sprintf("maintenance on on %s: monitors and actions paused; resources are left as they are", st.Node)
				}
				return fmt.Sprintf("maintenance off on %s: every running resource is checked now", st.Node)
			})
		},
	}
}

// newResourceCmd: `mirrorctl resource restart NAME`.
func newResourceCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "resource", Short: "Act on one resource of the group"}
	c.AddCommand(&cobra.Command{
		Use:   "restart NAME",
		Short: "Restart resource NAME and the resources started after it, on this node",
		Long: `restart stops resource NAME and every resource started after it (in reverse
order), then starts them again, on this node. It counts no failure. The
group must be running here and maintenance off.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeResources(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			return groupCommand(cmd, g, "resource-restart", map[string]string{"name": args[0]}, func(st node.Status) string {
				return fmt.Sprintf("restarting %s and the resources after it on %s", args[0], st.Node)
			})
		},
	})
	return c
}

// newCleanupCmd: `mirrorctl cleanup [NAME]`.
func newCleanupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup [NAME]",
		Short: "Forget failures (of NAME, or of every resource) and unblock the group on this node",
		Long: `cleanup forgets the failure counts of resource NAME, or of every resource
without NAME, on this node. If the group is blocked (a stop failed or timed
out), cleanup unblocks it: make sure the resource is really stopped first;
the resources left as they were are stopped (or started) again. Without
NAME it also ends the fenced state: once everything here is stopped the
node registers its key on the arrays again and may run the group.`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeResources(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a struct {
				Name string `json:"name,omitempty"`
			}
			if len(args) == 1 {
				a.Name = args[0]
			}
			return groupCommand(cmd, g, "cleanup", a, func(st node.Status) string {
				if a.Name != "" {
					return fmt.Sprintf("failures of %s forgotten on %s", a.Name, st.Node)
				}
				return fmt.Sprintf("all failures forgotten on %s", st.Node)
			})
		},
	}
}
