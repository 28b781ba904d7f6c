package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/registry"
	"github.com/hamirror/hamirror/heartbeat/services"
)

// newNodeCmd: `mirrorctl node remove ID` (R14).
func newNodeCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "node", Short: "Change the cluster's membership"}
	c.AddCommand(&cobra.Command{
		Use:   "remove ID",
		Short: "Remove a node for good: the data it backed up is re-sent so every node has two copies again",
		Long: `node remove takes a node out of the index table for good. The nodes that backed
up their traffic data to it send it to new targets; the data of failed nodes it
held is handed over. Remove the node from the cluster file afterwards. A removed
node cannot register again under the same ID.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			var t registry.Table
			if err := control.Call(g.control, "node-remove", services.RemoveArgs{ID: heartbeat.NodeID(a[0])}, &t); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s removed for good; its traffic data stays on %s\n", a[0], removedTarget(t, a[0]))
			return renderTable(out, hbTable(t))
		},
	})
	return c
}

func removedTarget(t registry.Table, id string) string {
	if r, ok := t.IsRemoved(heartbeat.NodeID(id)); ok && r.BackupTarget != "" {
		return string(r.BackupTarget)
	}
	return "no other node"
}

// hbTable shows the registry's table with the index table's renderer.
func hbTable(t registry.Table) heartbeat.Table {
	h := heartbeat.Table{Version: t.Version, Coordinator: t.Coordinator}
	for _, n := range t.Nodes {
		h.Rows = append(h.Rows, n.Row)
	}
	return h
}
