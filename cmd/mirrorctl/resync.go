package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// newResyncCmd: `mirrorctl resync [--wait]`.
func newResyncCmd(g *globals) *cobra.Command {
	var wait bool
	c := &cobra.Command{
		Use:   "resync [--wait]",
		Short: "Start (or resume) copying out-of-sync chunks; --wait follows it to the end",
		Long: `resync starts or resumes the copy of every out-of-sync chunk to the leg
that needs it (mirrord also starts it by itself after 'leg add' and at
assembly). With --wait it returns when both legs are in sync, with a
progress bar on a terminal; it fails if a leg fails meanwhile.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := call(g, "resync", nil)
			if err != nil {
				return err
			}
			st, err := r.volumeHere()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !wait {
				if st.State == "clean" {
					fmt.Fprintln(out, "both legs are in sync; nothing to resync")
				} else {
					fmt.Fprintf(out, "resync running: %s of %s to copy (mirrorctl status shows progress)\n", human(st.Resync.TotalBytes-st.Resync.DoneBytes), human(st.Resync.TotalBytes))
				}
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			bar := &progressBar{w: out, label: "resync", tty: isTerminal(out)}
			start := time.Now()
			err = poll(ctx, 200*time.Millisecond, func() (bool, error) {
				r, err := getStatus(g)
				if err != nil {
					return false, err
				}
				st, err := r.volumeHere()
				if err != nil {
					return false, err
				}
				switch st.State {
				case "clean":
					bar.draw(st.Resync.TotalBytes, st.Resync.TotalBytes, st.Resync.BytesPerSecond, 0)
					return true, nil
				case "degraded", "failed", "split-brain", "waiting", "fenced":
					if !st.Resync.Running {
						bar.finish()
						printStatus(out, st)
						return false, fmt.Errorf("resync cannot complete: the volume is %s", st.State)
					}
				}
				bar.draw(st.Resync.DoneBytes, st.Resync.TotalBytes, st.Resync.BytesPerSecond, st.Resync.ETASeconds)
				return false, nil
			})
			bar.finish()
			if errors.Is(err, context.Canceled) {
				return errors.New("interrupted (the resync goes on in mirrord)")
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "in sync: both legs hold the same data (waited %s)\n", time.Since(start).Round(100*time.Millisecond))
			return nil
		},
	}
	c.Flags().BoolVar(&wait, "wait", false, "return when both legs are in sync (progress bar on a terminal)")
	return c
}
