package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/cmd/internal/legopts"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/mirror/nbd"
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
	blockSize  int
	lockDir    string
	nodeID     string
	mmpIntv    time.Duration
	ioctl      bool
	cpuprofile string
	leg        legopts.Flags
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

A leg that cannot be opened is left out: the volume runs degraded and
'mirrorctl leg add N' brings it back. After a split brain (both legs
written separately) mirrord stays up without exporting anything and
'mirrorctl status' explains; restart it with --keep-leg N to keep leg N's
data (the other leg is overwritten by a full resync).

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
	fl.IntVar(&f.keepLeg, "keep-leg", -1, "after a split brain: the leg (0 or 1) whose data to keep")
	fl.StringVar(&f.name, "name", "hamirror", "NBD export name")
	fl.BoolVar(&f.readOnly, "read-only", false, "export read-only")
	fl.DurationVar(&f.ioTimeout, "io-timeout", 5*time.Second, "per-leg I/O timeout; a leg that exceeds it is failed")
	fl.BoolVar(&f.autoReAdd, "auto-readd", true, "re-add a failed iscsi:// leg automatically when its array answers again (file and block-device legs come back with 'mirrorctl leg add')")
	f.leg.Add(fl, false)
	fl.StringVar(&f.resyncMin, "resync-min-rate", "10M", "resync rate kept even under application I/O (bytes/s)")
	fl.StringVar(&f.resyncMax, "resync-max-rate", "0", "resync rate ceiling when idle (bytes/s, 0: unlimited)")
	fl.IntVar(&f.blockSize, "block-size", 0, "export at least this block size (512 or 4096; default: the legs' largest logical block size); 4096 lets a 4096-byte-sector leg replace a 512-byte one without a restart")
	fl.StringVar(&f.lockDir, "lock-dir", mirror.DefaultLockDir, "where this node's leg locks live (a second mirrord on the same legs is refused)")
	fl.StringVar(&f.nodeID, "node-id", "", "this node's name, recorded as the volume's last writer and owner (default: the hostname)")
	fl.DurationVar(&f.mmpIntv, "mmp-interval", time.Second, "multi-mount protection: rewrite the owner block on each leg this often (0 turns it off)")
	fl.IntVar(&f.kernConns, "device-connections", 2, "sockets the kernel spreads /dev/nbdN I/O over")
	fl.BoolVar(&f.ioctl, "device-ioctl", false, "attach --device with the legacy ioctls instead of netlink (no reclaim after a crash)")
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
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
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

	// The control socket comes first, so that mirrorctl can explain a
	// volume that cannot start (split brain).
	if network, path, err := control.ParseAddr(f.control); err == nil && network == "unix" {
		os.MkdirAll(filepath.Dir(path), 0o700)
	}
	ctl, err := control.Listen(f.control)
	if err != nil {
		return err
	}
	defer ctl.Close()
	starting := func(json.RawMessage) (any, error) {
		return nil, errors.New("mirrord is starting: opening the legs and assembling the volume (an unreachable iSCSI array takes up to a few I/O timeouts); try again in a moment")
	}
	for _, op := range []string{"status", "leg-fail", "leg-add", "resync", "verify"} {
		ctl.Handle(op, starting)
	}
	go ctl.Serve()

	var legs [2]mirror.Leg
	for i, spec := range f.legs {
		l, err := mirror.OpenLeg(spec, f.legOptions())
		if err != nil {
			log.Warn("leg cannot be opened; assembling without it (mirrorctl leg add brings it back)", "leg", spec, "err", err)
			continue
		}
		legs[i] = l
	}
	if legs[0] == nil && legs[1] == nil {
		return fmt.Errorf("neither leg can be opened (%s, %s)", f.legs[0], f.legs[1])
	}
	opts := mirror.DefaultOptions()
	opts.IOTimeout = f.ioTimeout
	opts.KeepLeg = f.keepLeg
	opts.AutoReAdd = f.autoReAdd && slices.ContainsFunc(f.legs, mirror.IsNetworkLeg)
	opts.LegOptions = f.legOptions()
	// A leg that cannot be opened now is reopened from its name: by
	// 'mirrorctl leg add N' and, for iscsi:// legs, by AutoReAdd when its
	// array answers.
	opts.Specs = [2]string{f.legs[0], f.legs[1]}
	opts.ResyncMinRate, opts.ResyncMaxRate = minRate, maxRate
	opts.BlockSize = f.blockSize
	opts.MMP.Interval = f.mmpIntv
	if f.nodeID != "" {
		opts.NodeID = f.nodeID
	}
	opts.Logger = log
	vol, err := mirror.Assemble(legs, opts)
	if err != nil {
		closeLegs(legs)
		var sb *mirror.SplitBrainError
		if errors.As(err, &sb) {
			return waitSplitBrain(ctx, ctl, f, sb, log)
		}
		if errors.Is(err, mirror.ErrNoMetadata) {
			return fmt.Errorf("%w\nthese legs hold no hamirror metadata: create the mirror first with\n  mirrorctl create %s %s", err, f.legs[0], f.legs[1])
		}
		return err
	}
	st := vol.Status()
	log.Info("volume assembled", "uuid", st.VolumeUUID, "size", st.SizeBytes, "state", st.State)

	srv, err := nbd.NewServer(vol, nbd.Options{ExportName: f.name, Description: "hamirror volume " + st.VolumeUUID, ReadOnly: f.readOnly, Logger: log})
	if err != nil {
		vol.Close()
		return err
	}
	d := &daemon{vol: vol, srv: srv, log: log, legOpt: f.legOptions(), locks: locks}
	d.register(ctl)
	for _, addr := range f.listen {
		ln, err := nbd.Listen(addr)
		if err != nil {
			d.shutdown()
			return err
		}
		d.mu.Lock()
		d.listen = append(d.listen, addr)
		d.mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := srv.Serve(ln); err != nil {
				log.Error("NBD listener stopped", "addr", addr, "err", err)
			}
		}()
		log.Info("serving NBD", "addr", addr)
	}
	if f.device != "" {
		if err := nbd.ProtectProcess(); err != nil {
			log.Warn("cannot fully protect mirrord from deadlocking on its own device", "err", err)
		}
		dev, err := nbd.Attach(srv, nbd.AttachOptions{Device: f.device, Connections: f.kernConns,
			Identifier: "hamirror:" + st.VolumeUUID, ForceIoctl: f.ioctl, Logger: log})
		if err != nil {
			d.shutdown()
			return err
		}
		d.mu.Lock()
		d.dev = dev
		d.mu.Unlock()
		log.Info("kernel device attached", "device", dev.Path, "reclaimed", dev.Reclaimed)
	}
	<-ctx.Done()
	log.Info("shutting down: draining NBD requests, flushing both legs")
	if err := d.shutdown(); err != nil {
		return err
	}
	log.Info("volume closed clean")
	return nil
}

// daemon is a running volume and what serves it.
type daemon struct {
	vol *mirror.Volume
	srv *nbd.Server
	log *slog.Logger
	wg  sync.WaitGroup

	mu     sync.Mutex // guards what control handlers read while starting
	dev    *nbd.Device
	listen []string
	legOpt mirror.LegOptions // how leg-add opens a named replacement leg
	locks  *mirror.LegLocks  // this node's locks on the legs
}

func (d *daemon) status() daemonStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := daemonStatus{Status: d.vol.Status(), NBD: nbdStatus{Listen: append([]string(nil), d.listen...), Connections: d.srv.Connections()}}
	if d.dev != nil {
		s.NBD.Device = d.dev.Path
	}
	return s
}

func (d *daemon) register(ctl *control.Server) {
	ctl.Handle("status", func(json.RawMessage) (any, error) { return d.status(), nil })
	ctl.Handle("leg-fail", func(raw json.RawMessage) (any, error) {
		var a slotArgs
		if err := decodeArgs(raw, &a); err != nil {
			return nil, err
		}
		if err := d.vol.FailLeg(a.Slot); err != nil {
			return nil, fmt.Errorf("leg fail %d: %w", a.Slot, err)
		}
		d.log.Warn("leg failed by operator", "slot", a.Slot)
		return d.status(), nil
	})
	ctl.Handle("leg-add", func(raw json.RawMessage) (any, error) {
		var a slotArgs
		if err := decodeArgs(raw, &a); err != nil {
			return nil, err
		}
		var leg mirror.Leg
		drop := func() {}
		if a.Path != "" {
			var err error
			if drop, err = d.locks.Add(a.Path); err != nil {
				return nil, fmt.Errorf("leg add %d: %w", a.Slot, err)
			}
			l, err := mirror.OpenLeg(a.Path, d.legOpt)
			if err != nil {
				drop()
				return nil, fmt.Errorf("leg add %d: %w", a.Slot, err)
			}
			leg = l
		}
		if err := d.vol.AddLeg(a.Slot, leg); err != nil {
			if leg != nil {
				leg.Close()
			}
			drop()
			return nil, fmt.Errorf("leg add %d: %w", a.Slot, err)
		}
		d.log.Info("leg re-added; resync started", "slot", a.Slot)
		return d.status(), nil
	})
	ctl.Handle("resync", func(json.RawMessage) (any, error) {
		if err := d.vol.Resync(); err != nil {
			return nil, fmt.Errorf("resync: %w", err)
		}
		return d.status(), nil
	})
	ctl.Handle("verify", func(raw json.RawMessage) (any, error) {
		var a verifyArgs
		if err := decodeArgs(raw, &a); err != nil {
			return nil, err
		}
		if err := d.vol.StartVerify(a.Repair); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		return d.status(), nil
	})
}

func decodeArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return errors.New("missing arguments")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("malformed arguments: %w", err)
	}
	return nil
}

// shutdown detaches the kernel device, drains and closes the NBD server,
// then closes the volume (flush both legs, mark clean).
func (d *daemon) shutdown() error {
	var errs []error
	d.mu.Lock()
	dev := d.dev
	d.mu.Unlock()
	if dev != nil {
		if err := dev.Detach(); err != nil {
			errs = append(errs, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("NBD clients did not finish within 30s: %w", err))
	}
	d.wg.Wait()
	if err := d.vol.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the volume: %w", err))
	}
	return errors.Join(errs...)
}

// waitSplitBrain keeps mirrord up without exporting anything: status says
// "split-brain" and explains how to choose a leg.
func waitSplitBrain(ctx context.Context, ctl *control.Server, f *volumeFlags, sb *mirror.SplitBrainError, log *slog.Logger) error {
	st := daemonStatus{Status: mirror.Status{State: "split-brain", Error: sb.Error()}}
	for i := range 2 {
		st.Legs[i] = mirror.LegStatus{Slot: i, Path: sb.Legs[i].Name, State: "out_of_sync"}
		if st.Legs[i].Path == "" {
			st.Legs[i].Path = f.legs[i]
		}
	}
	ctl.Handle("status", func(json.RawMessage) (any, error) { return st, nil })
	refuse := func(json.RawMessage) (any, error) {
		return nil, errors.New("the volume is not assembled (split brain): restart mirrord with --keep-leg 0 or --keep-leg 1")
	}
	for _, op := range []string{"leg-fail", "leg-add", "resync", "verify"} {
		ctl.Handle(op, refuse)
	}
	log.Error("SPLIT BRAIN: not exporting the volume", "explanation", sb.Error())
	fmt.Fprintf(os.Stderr, "\nmirrord: %v\n\nTo resolve: decide which leg holds the data to keep, stop mirrord and restart it with\n  mirrord volume --keep-leg N --leg %s --leg %s %s\n\n",
		sb, f.legs[0], f.legs[1], listenArgs(f.listen))
	<-ctx.Done()
	return nil
}

func listenArgs(addrs []string) string {
	var b strings.Builder
	for i, a := range addrs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("--listen " + a)
	}
	return b.String()
}

func closeLegs(legs [2]mirror.Leg) {
	for _, l := range legs {
		if l != nil {
			l.Close()
		}
	}
}

// legOptions opens legs with the iSCSI settings of the command line; the
// initiator gives up a little before the engine's own I/O timeout so the
// leg fails with the iSCSI error that names the cause.
func (f *volumeFlags) legOptions() mirror.LegOptions {
	o := f.leg.LegOptions(false)
	o.ISCSI.Timeout = max(f.ioTimeout*9/10, 500*time.Millisecond)
	return o
}
