package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/resources"
	"github.com/hamirror/hamirror/resources/agents"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/resources/node"
)

// newConfigCmd: `mirrorctl config check FILE [--node N]`.
func newConfigCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Check a cluster file before mirrord reads it"}
	var self string
	var quiet bool
	check := &cobra.Command{
		Use:   "check FILE [--node N]",
		Short: "Load and validate a whole cluster file, and print what mirrord would run",
		Long: `check reads FILE as mirrord --config would (every section; unknown keys and
bad values are errors that name the key), builds every resource's agent
the way mirrord does (so a resource's parameters, an OCF agent that is not
installed or a PostgreSQL bindir without pg_ctl are caught), and prints
what would run: the nodes and their media, the timing, the volume, the
fencing keys, and the group in start order with each resource's timeouts.
It needs no running mirrord and changes nothing.

With --node N the file is checked as node N would load it (N must be in
nodes). Without it, the file is checked for no node in particular.

Exit status: 0 when the file is valid (warnings, such as a missing key
file on this machine, are printed on stderr), 1 with the error naming the
key to fix otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := node.LoadConfig(args[0], heartbeat.NodeID(self))
			if err != nil {
				return err
			}
			if err := checkRunnable(cfg); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if !quiet {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "%s: valid\n", args[0])
				if err := describeConfig(out, cfg); err != nil {
					return err
				}
			}
			if _, err := heartbeat.LoadKey(cfg.Heartbeat.KeyFile); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: cluster.key_file: %v (mirrord refuses to start without it)\n", err)
			}
			return nil
		},
	}
	check.Flags().StringVar(&self, "node", "", "check the file as this node loads it (its ID in nodes)")
	check.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only errors and warnings (systemctl reload runs it)")
	check.ValidArgsFunction = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
	}
	c.AddCommand(check)
	return c
}

// checkRunnable makes the checks mirrord's node.New makes beyond
// node.LoadConfig that need no I/O but a stat: the volume legs are
// iscsi:// LUNs (the node fences through them), and every resource's
// agent accepts its parameters (the same constructor mirrord calls).
func checkRunnable(cfg *node.Config) error {
	if v := cfg.Volume; v != nil {
		for i, l := range v.Legs {
			if !iscsi.IsLegSpec(l) {
				return &heartbeat.KeyError{Key: fmt.Sprintf("volume.legs[%d]", i),
					Msg: fmt.Sprintf("%q is not an iscsi:// leg: the cluster node fences through SCSI-3 persistent reservations on the arrays (a file or device leg can only be served by `mirrord volume`)", l)}
			}
		}
	}
	for _, r := range cfg.Group.Resources {
		if r.Type == resources.TypeFence || r.Type == resources.TypeVolume {
			continue
		}
		if _, err := agents.New(r.Key, r.Type, r.Name, r.Params, agents.Env{}); err != nil {
			return err
		}
	}
	return nil
}

// describeConfig prints what mirrord would run from cfg.
func describeConfig(w io.Writer, cfg *node.Config) error {
	hb := cfg.Heartbeat
	onOff := map[bool]string{true: "on", false: "off"}
	failback := onOff[hb.Failback]
	if hb.Failback && hb.FailbackDelay > 0 {
		failback += " after " + hb.FailbackDelay.String()
	}
	fmt.Fprintf(w, "cluster %s: key file %s, preferred node %s, failback %s, state in %s\n",
		hb.Cluster, hb.KeyFile, orNone(string(hb.Preferred)), failback, hb.StateDir)
	if hb.Self != "" {
		fmt.Fprintf(w, "checked as node %s\n", hb.Self)
	}
	t := hb.Timing
	fmt.Fprintf(w, "timing: keepalive %s, warn %s, dead %s, initdead %s\n", t.Keepalive, t.Warn, t.Dead, t.InitDead)
	fmt.Fprintf(w, "nodes (heartbeat on UDP port %d):\n", hb.Port)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, n := range hb.Nodes {
		var media []string
		for _, l := range n.Links {
			m := l.Medium + " " + l.Address
			if l.Interface != "" {
				m += " on " + l.Interface
			}
			media = append(media, m)
		}
		if n.Serial != "" {
			media = append(media, fmt.Sprintf("serial %s at %d baud", n.Serial, hb.Baud))
		}
		fmt.Fprintf(tw, "  %s\taddress %s\t%s\n", n.ID, orNone(n.Address), strings.Join(media, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range hb.Disks {
		where := d.Path
		if d.Leg != "" {
			where = "the slots at the end of leg " + d.Leg
		}
		fmt.Fprintf(w, "disk heartbeat %s: %s\n", d.Name, orNone(where))
	}
	if len(hb.PingTargets) > 0 {
		fmt.Fprintf(w, "ping: %s every %s\n", strings.Join(hb.PingTargets, ", "), hb.PingInterval)
	}
	describeVolume(w, cfg)
	if err := describeGroup(w, cfg.Group); err != nil {
		return err
	}
	if len(cfg.Group.Resources) > 0 {
		fmt.Fprintf(w, "  a hand-over at shutdown stops the group here within %s (its stop timeouts, then timing.dead for the peer); systemd's TimeoutStopSec must be longer\n",
			cfg.ShutdownTimeout())
	}
	sv := cfg.Services
	fmt.Fprintf(w, "services: channel on TCP port %d, management log and traffic data in %s\n", sv.Port, sv.Dir)
	metrics := "off"
	if cfg.Metrics.Listen != "" {
		metrics = "http://" + cfg.Metrics.Listen + "/metrics"
	}
	fmt.Fprintf(w, "metrics: %s\ncontrol socket: %s\n", metrics, cfg.Control)
	return nil
}

func describeVolume(w io.Writer, cfg *node.Config) {
	v := cfg.Volume
	if v == nil {
		fmt.Fprintln(w, "volume: none (membership and the other resources only)")
		return
	}
	fmt.Fprintf(w, "volume: leg 0 %s, leg 1 %s\n", v.Legs[0], v.Legs[1])
	var serve []string
	if v.Device != "" {
		serve = append(serve, "device "+v.Device)
	}
	if v.Fuse != "" {
		serve = append(serve, "nbdfuse in "+v.Fuse)
	}
	serve = append(serve, v.Listen...)
	maxRate := "unlimited"
	if v.ResyncMaxRate > 0 {
		maxRate = human(v.ResyncMaxRate) + "/s"
	}
	fmt.Fprintf(w, "  served as %s (link %s, export %q)\n", strings.Join(serve, ", "), v.Link, v.ExportName)
	fmt.Fprintf(w, "  io_timeout %s, resync %s/s to %s, mmp every %s, auto re-add %v\n",
		v.IOTimeout, human(v.ResyncMinRate), maxRate, v.MMPInterval, v.AutoReAdd)
	initiator := cfg.ISCSI.InitiatorName
	if initiator == "" {
		initiator = iscsi.DefaultInitiatorName() + " (from this host's name)"
	}
	fmt.Fprintf(w, "  iSCSI initiator %s\n", initiator)
	var keys []string
	for _, n := range cfg.Heartbeat.Nodes {
		k, ok := cfg.Fencing.Keys[n.ID]
		how := "configured"
		if !ok {
			k, how = fence.DeriveKey(cfg.Heartbeat.Cluster, string(n.ID)), "derived"
		}
		keys = append(keys, fmt.Sprintf("%s %#016x (%s)", n.ID, k, how))
	}
	fmt.Fprintf(w, "fencing keys: %s\n", strings.Join(keys, ", "))
}

func describeGroup(w io.Writer, g resources.Config) error {
	if len(g.Resources) == 0 {
		fmt.Fprintln(w, "group: no resources")
		return nil
	}
	window := "until cleanup"
	if g.FailureTimeout > 0 {
		window = "within " + g.FailureTimeout.String()
	}
	fmt.Fprintf(w, "group: started in this order, stopped in reverse; %d failures %s move it; start failure fatal %v\n",
		g.MigrationThreshold, window, g.StartFailureIsFatal)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tRESOURCE\tTYPE\tSTART\tSTOP\tMONITOR\tMONITOR TIMEOUT\tFROM")
	for i, r := range g.Resources {
		every := "off"
		if r.MonitorInterval > 0 {
			every = "every " + r.MonitorInterval.String()
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, r.Name, r.Type, r.StartTimeout, r.StopTimeout, every, r.MonitorTimeout, r.Key)
	}
	return tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
