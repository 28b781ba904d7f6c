package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/legopts"
	"github.com/hamirror/hamirror/cmd/internal/volumed"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/mirror/units"
)

// volumeFlags are `mirrord volume`'s options.
type volumeFlags struct {
	legs       []string
	listen     []string
	control    string
	device     string
	keepLeg    int
	name       string
	readOnly   bool
	ioTimeout  time.Duration
	autoReAdd  bool
	resyncMin  string
	resyncMax  string
	kernConns  int
	ioctl      bool
	cpuprofile string
	leg        legopts.Flags
	blockSize  int
	lockDir    string
	nodeID     string
	mmpIntv    time.Duration
}

// newVolumeCmd: `mirrord volume --leg LEG --leg LEG --listen unix:PATH ...`.
func newVolumeCmd() *cobra.Command {
	f := &volumeFlags{}
	c := &cobra.Command{
		Use:   "volume --leg LEG --leg LEG --listen unix:PATH [--listen tcp:HOST:PORT] [--control unix:PATH] [--device /dev/nbdN]",
		Short: "Assemble the mirrored volume from two legs and serve it over NBD",
		Long: `volume assembles the mirror from its two legs (files or block devices made
with 'mirrorctl create'), resyncs what is out of sync in the background and
serves the volume over NBD on every --listen address (unix sockets are
created mode 0600; TCP is opened only on an address you name) and, with
--device, as the kernel block device /dev/nbdN.

A leg that cannot be opened is left out only when the other leg proves it
holds the newest data (its own metadata records the first leg failed):
then the volume runs degraded and 'mirrorctl leg add N' brings the leg
back. Otherwise, and when a leg's metadata cannot be read, mirrord stays
up without exporting anything, 'mirrorctl status' explains (state
"waiting"), and it tries again every 2 seconds, so the volume starts by
itself once the other leg is back; to start on one leg now, restart it
with --keep-leg N. After a split brain (both legs written separately)
mirrord also stays up without exporting (state "split-brain"); restart it
with --keep-leg N to keep leg N's data (the other leg is overwritten by a
full resync).

One volume, one mirrord: the legs are locked on this node first (a second
mirrord on them is refused at once, naming the first's pid), and
multi-mount protection keeps other nodes out: mirrord rewrites a block at
the end of each leg every --mmp-interval; a mirrord that finds that block
not released waits until it can tell whether its owner still runs (two
intervals or the owner's grace, plus a second; after a crash that is about
--io-timeout x 2 + 2 s) and refuses, naming the owner's node and pid, if
the block moved.

The volume's block size is the largest logical block size of its legs (a
4096-byte-sector LUN makes it 4096); misaligned requests get EINVAL.

SIGTERM or SIGINT drains in-flight requests, flushes both legs, marks
the volume clean on disk and releases it (the next start does not wait).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return runVolume(ctx, f)
		},
	}
	fl := c.Flags()
	fl.StringArrayVar(&f.legs, "leg", nil, "a leg: path to a file or block device (give it twice)")
	fl.StringArrayVar(&f.listen, "listen", nil, "NBD listen address, unix:PATH or tcp:HOST:PORT (repeatable)")
	fl.StringVar(&f.control, "control", "unix:/run/hamirror/mirrord.sock", "control socket for mirrorctl (unix:PATH)")
	fl.StringVar(&f.device, "device", "", "also attach the volume as this kernel device (/dev/nbdN)")
	fl.IntVar(&f.keepLeg, "keep-leg", -1, "the leg (0 or 1) whose data to keep when the legs do not prove which is newest (split brain, other leg missing or unreadable)")
	fl.StringVar(&f.name, "name", "hamirror", "NBD export name")
	fl.BoolVar(&f.readOnly, "read-only", false, "export read-only")
	fl.DurationVar(&f.ioTimeout, "io-timeout", 5*time.Second, "per-leg I/O timeout; a leg that exceeds it is failed")
	fl.BoolVar(&f.autoReAdd, "auto-readd", true, "re-add a failed iscsi:// leg automatically when its array answers again (file and block-device legs come back with 'mirrorctl leg add')")
	f.leg.Add(fl, false)
	fl.StringVar(&f.resyncMin, "resync-min-rate", "10M", "resync rate kept even under application I/O (bytes/s)")
	fl.StringVar(&f.resyncMax, "resync-max-rate", "0", "resync rate ceiling when idle (bytes/s, 0: unlimited)")
	fl.IntVar(&f.kernConns, "device-connections", 2, "sockets the kernel spreads /dev/nbdN I/O over")
	fl.BoolVar(&f.ioctl, "device-ioctl", false, "attach --device with the legacy ioctls instead of netlink (no reclaim after a crash)")
	fl.IntVar(&f.blockSize, "block-size", 0, "export at least this block size (512 or 4096; default: the legs' largest logical block size); 4096 lets a 4096-byte-sector leg replace a 512-byte one without a restart")
	fl.StringVar(&f.lockDir, "lock-dir", mirror.DefaultLockDir, "where this node's leg locks live (a second mirrord on the same legs is refused)")
	fl.StringVar(&f.nodeID, "node-id", "", "this node's name, recorded as the volume's last writer and owner (default: the hostname)")
	fl.DurationVar(&f.mmpIntv, "mmp-interval", time.Second, "multi-mount protection: rewrite the owner block on each leg this often (0 turns it off)")
	fl.StringVar(&f.cpuprofile, "cpuprofile", "", "write a CPU profile here until exit (benchmarks)")
	fl.MarkHidden("cpuprofile")
	return c
}

// daemonStatus is the control "status" answer: mirror.Status (the JSON
// contract of `mirrorctl status --json`) plus what mirrord serves.
type daemonStatus struct {
	mirror.Status
	NBD nbdStatus `json:"nbd"`
}

type nbdStatus struct {
	Listen      []string `json:"listen,omitempty"`
	Device      string   `json:"device,omitempty"`
	Connections int      `json:"connections"`
}

// slotArgs and verifyArgs are the control ops' arguments.
type slotArgs struct {
	Slot int    `json:"slot"`
	Path string `json:"path,omitempty"` // leg-add: a replacement leg
}

type verifyArgs struct {
	Repair bool `json:"repair"`
}

func runVolume(ctx context.Context, f *volumeFlags) error {
	if len(f.legs) != 2 {
		return fmt.Errorf("give exactly two legs (--leg A --leg B), got %d", len(f.legs))
	}
	if len(f.listen) == 0 && f.device == "" {
		return errors.New("nothing to serve: give --listen unix:PATH (and/or --device /dev/nbdN)")
	}
	if f.keepLeg < -1 || f.keepLeg > 1 {
		return fmt.Errorf("--keep-leg %d: must be 0 or 1", f.keepLeg)
	}
	minRate, err := units.ParseRate(f.resyncMin)
	if err != nil {
		return fmt.Errorf("--resync-min-rate: %w", err)
	}
	maxRate, err := units.ParseRate(f.resyncMax)
	if err != nil {
		return fmt.Errorf("--resync-max-rate: %w", err)
	}
	if f.cpuprofile != "" {
		pf, err := os.Create(f.cpuprofile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(pf)
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// The legs are locked before anything touches them: a second mirrord
	// on this node would log in with the same ISIDs and knock this one's
	// sessions off the arrays.
	locks, err := mirror.LockLegs(f.lockDir, f.legs...)
	if err != nil {
		return err
	}
	defer locks.Unlock()
	opts := mirror.DefaultOptions()
	opts.IOTimeout = f.ioTimeout
	opts.BlockSize = f.blockSize
	opts.MMP.Interval = f.mmpIntv
	if f.nodeID != "" {
		opts.NodeID = f.nodeID
	}
	opts.AutoReAdd = f.autoReAdd && slices.ContainsFunc(f.legs, mirror.IsNetworkLeg)
	opts.LegOptions = f.legOptions()
	opts.ResyncMinRate, opts.ResyncMaxRate = minRate, maxRate
	lo := opts.LegOptions
	opts.OpenLeg = func(spec string) (mirror.Leg, error) { return mirror.OpenLeg(spec, lo) }
	return volumed.Run(ctx, volumed.Config{
		Legs: [2]string{f.legs[0], f.legs[1]}, Listen: f.listen, Control: f.control, Device: f.device,
		KeepLeg: f.keepLeg, Name: f.name, ReadOnly: f.readOnly, Engine: opts,
		KernConns: f.kernConns, Ioctl: f.ioctl, Locks: locks,
	})
}

// legOptions opens legs with the iSCSI settings of the command line; the
// initiator gives up a little before the engine's own I/O timeout so the
// leg fails with the iSCSI error that names the cause.
func (f *volumeFlags) legOptions() mirror.LegOptions {
	o := f.leg.LegOptions(false)
	o.ISCSI.Timeout = max(f.ioTimeout*9/10, 500*time.Millisecond)
	return o
}
