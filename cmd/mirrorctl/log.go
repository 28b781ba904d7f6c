package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/heartbeat"
	"github.com/hamirror/hamirror/heartbeat/mlog"
	"github.com/hamirror/hamirror/heartbeat/services"
)

// parseSince takes an RFC 3339 time or a duration back from now ("1h").
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: give a time (2026-01-02T15:04:05Z, 2026-01-02) or a duration back from now (90m)", s)
}

// newLogCmd: `mirrorctl log [--follow] [--since T] [--node N] [--json]`.
func newLogCmd(g *globals) *cobra.Command {
	var follow, asJSON bool
	var since, node string
	var limit int
	c := &cobra.Command{
		Use:   "log",
		Short: "Show the cluster's management log, merged in time order (the same on every node)",
		Long: `log shows the management log this node holds: every node's entries, merged in
time order. Entries written while a peer was unreachable wait in a spool and
reach it when it is back; the output says when that is the case.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			q := mlog.Query{Since: t, Node: heartbeat.NodeID(node), Limit: limit}
			out := cmd.OutOrStdout()
			var res mlog.Result
			if err := control.Call(g.control, "log", q, &res); err != nil {
				return err
			}
			printEntries(out, res.Entries, asJSON)
			if !asJSON {
				printSpooled(cmd.ErrOrStderr(), res)
			}
			for follow {
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(time.Second):
				}
				next := res.Next
				q.After, q.Since = &next, time.Time{}
				if err := control.Call(g.control, "log", q, &res); err != nil {
					return err
				}
				printEntries(out, res.Entries, asJSON)
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new entries")
	c.Flags().StringVar(&since, "since", "", "only entries from this time (RFC 3339) or this long ago (1h)")
	c.Flags().StringVar(&node, "node", "", "only entries written by this node")
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per entry")
	c.Flags().IntVar(&limit, "limit", 1000, "at most this many (the newest) entries")
	c.AddCommand(newLogWriteCmd(g))
	return c
}

// newLogWriteCmd: `mirrorctl log write [--level L] MESSAGE...`: an
// operator's note, in every node's log like any other entry.
func newLogWriteCmd(g *globals) *cobra.Command {
	var level string
	c := &cobra.Command{
		Use:   "write MESSAGE...",
		Short: "Add an operator's note to the management log",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			var l slog.Level
			if err := l.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--level %q: want debug, info, warn or error", level)
			}
			var e mlog.Entry
			if err := control.Call(g.control, "log-write", services.NoteArgs{Level: l, Message: strings.Join(a, " ")}, &e); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "written as %s/%d\n", e.Node, e.Seq)
			return nil
		},
	}
	c.Flags().StringVar(&level, "level", "info", "debug, info, warn or error")
	return c
}

func printEntries(w io.Writer, es []mlog.Entry, asJSON bool) {
	for _, e := range es {
		if asJSON {
			b, _ := json.Marshal(e)
			fmt.Fprintln(w, string(b))
			continue
		}
		var fs []string
		for _, f := range e.Fields {
			v := f.Value
			if strings.ContainsAny(v, " \t\"") {
				v = fmt.Sprintf("%q", v)
			}
			fs = append(fs, f.Key+"="+v)
		}
		line := fmt.Sprintf("%s %-8s %6d %-5s %-10s %s", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Node, e.Seq, e.Level, e.Component, e.Message)
		if len(fs) > 0 {
			line += "  " + strings.Join(fs, " ")
		}
		fmt.Fprintln(w, line)
	}
}

func printSpooled(w io.Writer, res mlog.Result) {
	if res.Omitted > 0 {
		fmt.Fprintf(w, "(%d older entries not shown: use --since or --limit)\n", res.Omitted)
	}
	for id, n := range res.Spooled {
		fmt.Fprintf(w, "note: %s is unreachable from %s: %d entries wait in the spool and reach it when it is back\n", id, res.Self, n)
	}
}
