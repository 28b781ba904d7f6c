package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/mirror"
)

// volumeStatus is mirrord's answer to "status": mirror.Status (the JSON
// contract) plus what mirrord serves.
type volumeStatus struct {
	mirror.Status
	NBD struct {
		Listen      []string `json:"listen,omitempty"`
		Device      string   `json:"device,omitempty"`
		Connections int      `json:"connections"`
	} `json:"nbd"`
	// Cluster is heartbeat.Status when mirrord runs membership.
	Cluster json.RawMessage `json:"cluster,omitempty"`
}

// hasVolume reports whether mirrord answered with a volume (it may run
// cluster membership alone).
func (st volumeStatus) hasVolume() bool { return st.State != "" }

// newStatusCmd: `mirrorctl status [--json]`.
func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the node, its resource group and the volume: is the service up, is the data safe?",
		Long: `status shows what this node's mirrord knows, for a person, like crm_mon and
'drbdadm status' together:

  - the cluster: every node with its state, role, takeover term, what its
    resource group does (from its heartbeats) and each heartbeat medium;
  - the resource group on this node: its state (stopped, starting, running,
    stopping, blocked, fenced, failed), why it waits or is blocked and what
    to do, every resource with its state, failure count and last error;
  - the volume where it runs here (clean, degraded, resyncing, split-brain,
    waiting, fenced, failed), each leg, resync and verify progress, and a
    one-line verdict on data safety;
  - the peer's volume knowledge this node holds, and whether a takeover
    could use it to run on one array.

Against 'mirrord volume' (a volume without the cluster) it shows the volume.
--json prints mirrord's answer as it is (resources/node.Status for the
cluster node, mirror.Status plus nbd for 'mirrord volume').

Exit status: 0 when all is well; 2 when something needs attention (the
group runs on no node, or is blocked, fenced or failed here, or the volume
served here is not clean: degraded, resyncing, split, failed); 1 when
mirrord cannot be reached.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := getStatus(g)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, r.Raw); err != nil {
					return err
				}
			}
			if r.Node != nil {
				if !asJSON {
					if err := renderNode(out, *r.Node); err != nil {
						return err
					}
				}
				if nodeNeedsAttention(*r.Node) {
					return exitCode(2)
				}
				return nil
			}
			st := r.Volume
			if !asJSON {
				if st.hasVolume() || len(st.Cluster) == 0 {
					printStatus(out, st)
				}
				if len(st.Cluster) > 0 {
					if err := renderCluster(out, st.Cluster); err != nil {
						return err
					}
				}
			}
			if !st.hasVolume() && len(st.Cluster) > 0 {
				return nil // membership only: nodes and media are shown above
			}
			if st.State != "clean" {
				return exitCode(2)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print mirrord's answer as JSON, as it sent it")
	return c
}

// printJSON writes a JSON answer indented.
func printJSON(w io.Writer, raw json.RawMessage) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("mirrord's answer is not JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := b.WriteTo(w)
	return err
}

// printStatus writes the human form: the volume line, one line per leg,
// progress lines, and a verdict.
func printStatus(w io.Writer, st volumeStatus) {
	id := st.VolumeUUID
	if id == "" {
		id = "(not assembled)"
	}
	fmt.Fprintf(w, "volume %s state:%s", id, st.State)
	if st.SizeBytes > 0 {
		fmt.Fprintf(w, " size:%s chunk:%s", human(st.SizeBytes), human(st.ChunkBytes))
	}
	fmt.Fprintln(w)
	for _, l := range st.Legs {
		path := l.Path
		if path == "" {
			path = "(none)"
		}
		fmt.Fprintf(w, "  leg%d %s disk:%s", l.Slot, path, l.State)
		if l.OutOfSyncBytes > 0 {
			fmt.Fprintf(w, " out-of-sync:%s", human(l.OutOfSyncBytes))
		}
		if l.Error != "" {
			fmt.Fprintf(w, " error:%q", l.Error)
		}
		fmt.Fprintln(w)
	}
	if r := st.Resync; r.Running || (r.TotalBytes > 0 && r.DoneBytes < r.TotalBytes) {
		fmt.Fprintf(w, "  resync: %s of %s (%.0f%%), %s/s", human(r.DoneBytes), human(r.TotalBytes), pct(r.DoneBytes, r.TotalBytes), human(int64(r.BytesPerSecond)))
		if r.ETASeconds > 0 {
			fmt.Fprintf(w, ", %.0fs left", r.ETASeconds)
		}
		if !r.Running {
			fmt.Fprint(w, " (paused: mirrorctl resync resumes it)")
		}
		fmt.Fprintln(w)
	}
	if v := st.Verify; v.Running || v.TotalBytes > 0 {
		state := "done"
		if v.Running {
			state = "running"
		}
		fmt.Fprintf(w, "  verify: %s, %s of %s (%.0f%%), %d mismatches, %d repaired", state, human(v.DoneBytes), human(v.TotalBytes), pct(v.DoneBytes, v.TotalBytes), v.Mismatches, v.Repaired)
		if len(v.MismatchOffsets) > 0 {
			fmt.Fprintf(w, " (first at offsets %v)", v.MismatchOffsets)
		}
		if v.Error != "" {
			fmt.Fprintf(w, " error:%q", v.Error)
		}
		fmt.Fprintln(w)
	}
	if len(st.NBD.Listen) > 0 || st.NBD.Device != "" {
		var parts []string
		parts = append(parts, st.NBD.Listen...)
		if st.NBD.Device != "" {
			parts = append(parts, st.NBD.Device)
		}
		fmt.Fprintf(w, "  nbd: %s (%d connections)\n", strings.Join(parts, ", "), st.NBD.Connections)
	}
	fmt.Fprintf(w, "  data: %s\n", verdict(st))
}

// verdict is the one-glance answer to "is my data safe?".
func verdict(st volumeStatus) string {
	inSync := 0
	for _, l := range st.Legs {
		if l.State == "in_sync" {
			inSync++
		}
	}
	switch st.State {
	case "clean":
		return "SAFE: two in-sync copies"
	case "split-brain":
		return "NOT SERVED: split brain, both legs hold different data. " + st.Error
	case "waiting":
		return "NOT SERVED: the legs do not prove which copy is newest; mirrord retries as legs come back. " + st.Error
	case "fenced":
		return "NOT SERVED: this node was fenced off the arrays (another node owns the volume). " + st.Error
	case "failed":
		return "NOT SERVED: volume failed: " + st.Error
	}
	if inSync >= 1 {
		for _, l := range st.Legs {
			if l.State == "failed" {
				return fmt.Sprintf("ONE COPY ONLY: leg %d failed; after fixing it run: mirrorctl leg add %d", l.Slot, l.Slot)
			}
		}
		return "ONE COPY ONLY until the resync completes (mirrorctl resync --wait)"
	}
	return "AT RISK: no leg is in sync"
}

func pct(done, total int64) float64 {
	if total <= 0 {
		return 0
	}
	return 100 * float64(done) / float64(total)
}

// human formats a byte count with a binary unit.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}
