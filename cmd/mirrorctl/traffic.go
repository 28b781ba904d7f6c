package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/services"
	"github.com/hamirror/hamirror/heartbeat/traffic"
)

// newTrafficCmd: `mirrorctl traffic NODE [--since T] [--json]` (R10).
func newTrafficCmd(g *globals) *cobra.Command {
	var since string
	var asJSON bool
	var limit int
	c := &cobra.Command{
		Use:   "traffic NODE",
		Short: "Show a node's NIC traffic counters, from the node or, if it failed, from its backup target",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			t, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			var ans traffic.Answer
			if err := control.Call(g.control, "traffic", services.TrafficArgs{Node: heartbeat.NodeID(a[0]), Since: t, Limit: limit}, &ans); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, _ := json.MarshalIndent(ans, "", "  ")
				_, err := fmt.Fprintln(out, string(b))
				return err
			}
			return renderTraffic(out, ans)
		},
	}
	c.Flags().StringVar(&since, "since", "", "only samples from this time (RFC 3339) or this long ago (1h)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the answer as JSON")
	c.Flags().IntVar(&limit, "limit", 100, "at most this many (the newest) samples")
	return c
}

func renderTraffic(w io.Writer, a traffic.Answer) error {
	from := "from the node itself"
	if a.Source != a.Node {
		from = fmt.Sprintf("from its backup target %s", a.Source)
	}
	fmt.Fprintf(w, "traffic data of %s (state %s), %s: %d samples\n", a.Node, a.State, from, len(a.Samples))
	if a.Note != "" {
		fmt.Fprintf(w, "note: %s\n", a.Note)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TIME\tNIC\tRX BYTES\tTX BYTES\tRX PKTS\tTX PKTS\tRX ERR\tTX ERR\tRX DROP\tTX DROP\t")
	for _, s := range a.Samples {
		for _, c := range s.Ifaces {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", s.Time.Local().Format("2006-01-02 15:04:05"), c.Name,
				c.RxBytes, c.TxBytes, c.RxPackets, c.TxPackets, c.RxErrors, c.TxErrors, c.RxDropped, c.TxDropped)
		}
	}
	return tw.Flush()
}
