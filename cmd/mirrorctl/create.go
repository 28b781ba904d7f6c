package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/legopts"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/mirror/units"
)

// newCreateCmd: `mirrorctl create [--chunk SIZE] [--force] LEG LEG`.
func newCreateCmd(_ *globals) *cobra.Command {
	var chunk string
	var force, initialSync bool
	var slots int
	lf := legopts.Flags{Purpose: iscsi.PurposeTool}
	c := &cobra.Command{
		Use:   "create [--chunk SIZE] [--force] LEG LEG",
		Short: "Write fresh mirror metadata on two legs (files, block devices or iscsi:// LUNs)",
		Long: `Create writes fresh hamirror metadata at the end of both legs: one volume,
leg 0 and leg 1, both in sync. The data areas are not copied: the legs are
assumed blank or identical (like mdadm --assume-clean); with --sync leg 1 is
marked out of sync and receives a full copy of leg 0 at the first assembly.

Create refuses a leg that holds hamirror metadata, a file system (ext2/3/4,
XFS, btrfs, LUKS, swap) or a partition table unless --force is given.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := units.ParseSize(chunk)
			if err != nil {
				return fmt.Errorf("--chunk: %w", err)
			}
			var legs [2]mirror.Leg
			for i, p := range args {
				l, err := mirror.OpenLeg(p, lf.LegOptions(false))
				if err != nil {
					return err
				}
				defer l.Close()
				legs[i] = l
			}
			info, err := mirror.Create(legs, mirror.CreateOptions{ChunkSize: cs, Force: force, NodeSlots: slots, InitialSync: initialSync})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created volume %s: %d bytes (%s chunks of %d bytes) on %s (slot 0) and %s (slot 1)\n",
				info.VolumeUUID, info.DataSizeBytes, strconv.FormatInt(info.Chunks, 10), info.ChunkBytes, args[0], args[1])
			return nil
		},
	}
	c.Flags().StringVar(&chunk, "chunk", "1M", "bitmap chunk size (power of two, >= 64K; suffixes K, M, G)")
	c.Flags().BoolVar(&force, "force", false, "overwrite existing metadata, file systems or partition tables")
	c.Flags().BoolVar(&initialSync, "sync", false, "copy leg 0 onto leg 1 at the first assembly instead of assuming identical legs")
	c.Flags().IntVar(&slots, "node-slots", 16, "heartbeat slots reserved on each leg")
	lf.Add(c.Flags(), true)
	return c
}
