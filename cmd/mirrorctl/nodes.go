package main

import (
	"encoding/json"
	"fmt"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
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
			return renderTable(out, st.Table)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print mirrord's answer as JSON")
	return cmd
}
