package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
			printReservations(out, d)
			return nil
		},
	}
	f.Add(cmd.Flags(), true)
	return cmd
}

// printReservations says whether the LUN can fence (SCSI-3 persistent
// reservations with the Write Exclusive – Registrants Only type), which an
// administrator checks before going live, and who is registered now.
func printReservations(out io.Writer, d *iscsi.Disk) {
	c, err := d.ReportCapabilities()
	switch {
	case errors.Is(err, iscsi.ErrIllegalRequest):
		fmt.Fprintf(out, "fencing:    NOT POSSIBLE: the LUN refuses PERSISTENT RESERVE IN (%v); use an array with SCSI-3 persistent reservations\n", err)
		return
	case err != nil:
		fmt.Fprintf(out, "fencing:    unknown: REPORT CAPABILITIES failed: %v\n", err)
		return
	case !c.TypeMaskValid:
		fmt.Fprintf(out, "fencing:    probably (persistent reservations answer, but the LUN does not list its types)\n")
	case c.Supports(iscsi.WriteExclusiveRegistrantsOnly):
		fmt.Fprintf(out, "fencing:    yes (persistent reservations of type WE-RO)\n")
	default:
		fmt.Fprintf(out, "fencing:    NOT POSSIBLE: the LUN lacks the WE-RO reservation type hamirror holds\n")
	}
	var types []string
	for _, t := range c.Types {
		types = append(types, t.String())
	}
	if len(types) == 0 {
		types = []string{"not reported"}
	}
	fmt.Fprintf(out, "pr types:   %s; survive array power loss (PTPL): %s\n", strings.Join(types, " "), yesNo(c.PTPLC))
	_, keys, err := d.ReadKeys()
	if err != nil {
		fmt.Fprintf(out, "pr keys:    unknown: %v\n", err)
		return
	}
	ks := make([]string, len(keys))
	for i, k := range keys {
		ks[i] = fmt.Sprintf("0x%016x", k)
	}
	holder := "no reservation"
	if r, err := d.ReadReservation(); err != nil {
		holder = fmt.Sprintf("reservation unknown: %v", err)
	} else if r.Held {
		holder = fmt.Sprintf("%s reservation held by 0x%016x", r.Type, r.Key)
	}
	fmt.Fprintf(out, "pr keys:    %d registered [%s]; %s\n", len(keys), strings.Join(ks, " "), holder)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
