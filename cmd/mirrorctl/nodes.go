package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/registry"
	"github.com/hamirror/hamirror/heartbeat/services"
	"github.com/spf13/cobra"
)

// newNodesCmd is `mirrorctl nodes [--json]`: the cluster's nodes, the state
// of every medium towards them, and the index table (R7).
func newNodesCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "Show cluster nodes, heartbeat media and the index table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := control.Call(g.control, "nodes", nil, &raw); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				var v any
				if err := json.Unmarshal(raw, &v); err != nil {
					return fmt.Errorf("decoding mirrord's answer: %w", err)
				}
				b, _ := json.MarshalIndent(v, "", "  ")
				_, err := fmt.Fprintln(out, string(b))
				return err
			}
			if err := renderCluster(out, raw); err != nil {
				return err
			}
			var st heartbeat.Status
			if err := json.Unmarshal(raw, &st); err != nil {
				return err
			}
			fmt.Fprintln(out)
			if err := renderTable(out, st.Table); err != nil {
				return err
			}
			// A node that runs the cluster services also has the
			// registered nodes (R11: storage and registration).
			var svc services.Status
			switch err := control.Call(g.control, "services", nil, &svc); {
			case err == nil:
				fmt.Fprintln(out)
				return renderRegistry(out, svc.Table)
			case strings.Contains(err.Error(), "unknown operation"):
				return nil // membership only: no services
			default:
				return fmt.Errorf("the cluster services' table: %w", err)
			}
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print mirrord's answer as JSON")
	return cmd
}

// renderRegistry shows the cluster services' table: every registered node
// with its backup target, state and the storage it reported (R11).
func renderRegistry(w io.Writer, t registry.Table) error {
	if t.Version == 0 {
		fmt.Fprintln(w, "registered nodes: none yet (no coordinator has taken a registration)")
		return nil
	}
	fmt.Fprintf(w, "registered nodes (coordinator %s, term %d, table version %d)\n", t.Coordinator, t.Term, t.Version)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tBACKUP TARGET\tSTORAGE\tFREE\tTOTAL\tREGISTERED")
	for _, n := range t.Nodes {
		target, loc, when := string(n.BackupTarget), n.Storage.Location, "-"
		if target == "" {
			target = "-"
		}
		if loc == "" {
			loc = "-"
		}
		if !n.Registered.IsZero() {
			when = n.Registered.UTC().Format("2006-01-02 15:04:05Z")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.State, target, loc,
			human(int64(n.Storage.Free)), human(int64(n.Storage.Total)), when)
	}
	return tw.Flush()
}
