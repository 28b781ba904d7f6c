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

// newVerifyCmd: `mirrorctl verify [--wait] [--repair]`.
func newVerifyCmd(g *globals) *cobra.Command {
	var wait, repair bool
	c := &cobra.Command{
		Use:   "verify [--wait] [--repair]",
		Short: "Compare both legs block by block while the volume stays online",
		Long: `verify reads both legs and compares every chunk, online, in the background.
With --repair a mismatching chunk is rewritten from the leg holding the
volume's current data. With --wait it returns when the verify is done:
exit status 0 when the legs are identical (or every mismatch was repaired),
3 when mismatches remain.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := call(g, "verify", map[string]bool{"repair": repair})
			if err != nil {
				return err
			}
			if _, err := r.volumeHere(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !wait {
				fmt.Fprintln(out, "verify started; follow it with mirrorctl status")
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			bar := &progressBar{w: out, label: "verify", tty: isTerminal(out)}
			var final volumeStatus
			err = poll(ctx, 200*time.Millisecond, func() (bool, error) {
				r, err := getStatus(g)
				if err != nil {
					return false, err
				}
				st, err := r.volumeHere()
				if err != nil {
					return false, err
				}
				v := st.Verify
				bar.draw(v.DoneBytes, v.TotalBytes, 0, 0)
				final = st
				return !v.Running, nil
			})
			bar.finish()
			if errors.Is(err, context.Canceled) {
				return errors.New("interrupted (the verify goes on in mirrord)")
			}
			if err != nil {
				return err
			}
			v := final.Verify
			if v.Error != "" {
				return fmt.Errorf("verify stopped: %s", v.Error)
			}
			fmt.Fprintf(out, "verified %s: %d mismatching chunks, %d repaired\n", human(v.DoneBytes), v.Mismatches, v.Repaired)
			if v.Mismatches > v.Repaired {
				fmt.Fprintf(out, "the legs differ (first at offsets %v): run mirrorctl verify --repair --wait\n", v.MismatchOffsets)
				return exitCode(3)
			}
			fmt.Fprintln(out, "both legs hold identical data")
			return nil
		},
	}
	c.Flags().BoolVar(&wait, "wait", false, "return when the verify is done and report")
	c.Flags().BoolVar(&repair, "repair", false, "rewrite mismatching chunks from the current data")
	return c
}
