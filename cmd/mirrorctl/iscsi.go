package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/hamirror/hamirror/cmd/internal/legopts"
	"github.com/hamirror/hamirror/iscsi"
	"github.com/spf13/cobra"
)

func newISCSICmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "iscsi",
		Short: "Talk to iSCSI arrays with hamirror's own initiator",
	}
	cmd.AddCommand(newISCSIDiscoverCmd(), newISCSIInfoCmd())
	return cmd
}

func newISCSIDiscoverCmd() *cobra.Command {
	f := &legopts.Flags{Purpose: iscsi.PurposeTool}
	cmd := &cobra.Command{
		Use:   "discover HOST[:PORT]",
		Short: "List the targets an array offers (SendTargets discovery)",
		Long: "List the targets an iSCSI portal offers, one line per target and address:\n" +
			"  TARGET-IQN  HOST:PORT,TPGT  iscsi://HOST:PORT/TARGET-IQN/LUN\n" +
			"Use the iscsi:// form (with the LUN) as a leg for mirrorctl create.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*f.Timeout)
			defer cancel()
			targets, err := iscsi.Discover(ctx, args[0], f.ISCSI())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(targets) == 0 {
				fmt.Fprintf(out, "no targets offered to %s\n", f.ISCSI().InitiatorName)
			}
			for _, t := range targets {
				if len(t.Addresses) == 0 {
					fmt.Fprintf(out, "%s\t%s\tiscsi://%s/%s/LUN\n", t.Name, "-", iscsi.HostPort(args[0]), t.Name)
				}
				for _, a := range t.Addresses {
					hp, _, _ := strings.Cut(a, ",")
					fmt.Fprintf(out, "%s\t%s\tiscsi://%s/%s/LUN\n", t.Name, a, hp, t.Name)
				}
			}
			return nil
		},
	}
	f.Add(cmd.Flags(), true)
	return cmd
}

func newISCSIInfoCmd() *cobra.Command {
	f := &legopts.Flags{Purpose: iscsi.PurposeTool}
	cmd := &cobra.Command{
		Use:   "info iscsi://[USER@]HOST[:PORT]/TARGET-IQN/LUN",
		Short: "Log in to a LUN and show what it is (vendor, serial, device IDs, size, limits)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*f.Timeout)
			defer cancel()
			d, err := iscsi.OpenLeg(ctx, args[0], f.ISCSI())
			if err != nil {
				return err
			}
			defer d.Close()
			inq, capa, lim, p := d.Info(), d.Capacity(), d.Limits(), d.Params()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "leg:        %s\n", d.Name())
			fmt.Fprintf(out, "array:      %s %s %s\n", inq.Vendor, inq.Product, inq.Revision)
			fmt.Fprintf(out, "serial:     %s\n", inq.Serial)
			fmt.Fprintf(out, "device ids: %s\n", strings.Join(inq.DeviceIDs, " "))
			fmt.Fprintf(out, "size:       %d bytes (%d blocks of %d)\n", d.Size(), capa.Blocks, capa.BlockSize)
			fmt.Fprintf(out, "thin:       %v (unmapped blocks read zero: %v)\n", capa.LBPME, capa.LBPRZ)
			fmt.Fprintf(out, "zero via:   %s\n", map[iscsi.ZeroMethod]string{iscsi.ZeroWrite: "writing zeros", iscsi.ZeroWriteSame: "WRITE SAME(16)", iscsi.ZeroUnmap: "UNMAP"}[d.ZeroMethod(true)])
			fmt.Fprintf(out, "max xfer:   %d blocks (0: not advertised)\n", lim.MaxTransferBlocks)
			fmt.Fprintf(out, "session:    MaxRecvDataSegmentLength %d/%d, bursts %d/%d, ImmediateData %v, InitialR2T %v, digests %v/%v\n",
				p.MaxRecvDataSegmentLength, p.MaxSendDataSegmentLength, p.FirstBurstLength, p.MaxBurstLength,
				p.ImmediateData, p.InitialR2T, p.HeaderDigest, p.DataDigest)
			return nil
		},
	}
	f.Add(cmd.Flags(), true)
	return cmd
}
