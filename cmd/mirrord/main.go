// Command mirrord is hamirror's daemon: it assembles the mirrored volume,
// serves it over NBD (unix or TCP sockets, or the kernel's /dev/nbdN), runs
// cluster membership and the resource group, and answers mirrorctl on a
// control socket.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/mandoc"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mirrord:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "mirrord [--config FILE] [--node ID] [--control unix:PATH]",
		Short: "hamirror daemon: mirrored volume, NBD server, heartbeat and failover",
		Long: `mirrord --config FILE runs one node of a hamirror HA pair: the heartbeat
with its peer over every private link, the serial line and the disk slots
on the arrays; the resource group (fencing, the mirrored volume, file
system, virtual IP, database, applications) in order when this node is to
run it; the cluster services (management log, traffic data, index table);
and the control socket mirrorctl talks to. When the peer dies, this node
fences it off both arrays with SCSI-3 persistent reservations before it
assembles the volume and starts the group.

It is started by systemd (mirrord.service: Type=notify with a watchdog).
Signals: SIGTERM hands the group to a healthy peer (or stops it here) and
exits once nothing of it runs here; a second SIGTERM exits at once,
leaving what runs as it is. SIGHUP (systemctl reload mirrord) re-reads
the file: the group's failure thresholds, each resource's monitor interval
and timeouts, log.level and metrics.listen apply at once; any other change is refused, by key, until
mirrord restarts. A file that does not load changes nothing.

'mirrord volume' serves a mirrored volume on one machine, without the
cluster. Check a cluster file with 'mirrorctl config check FILE'; see
mirrorctl(8) and /etc/hamirror/cluster.yaml.example.`,
		Example: `  systemctl enable --now mirrord          run this node as a service
  mirrord --config /etc/hamirror/cluster.yaml --node n1
                                          the same in the foreground
  systemctl reload mirrord                check the file, then SIGHUP
  mirrord volume --leg /dev/sdb --leg /dev/sdc --listen unix:/run/vol.sock
                                          one volume, no cluster`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// `mirrord completion bash` works; man pages leave it out.
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
	}
	addClusterMode(root) // mirrord --config FILE: membership (cluster.go)
	// Each subcommand lives in its own file; add new ones here.
	root.AddCommand(
		newVolumeCmd(),
		newServicesCmd(),
		mandoc.Command(),
	)
	return root
}
