package volumed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/mirror/nbd"
)

// Config is what `mirrord volume` was asked to do.
type Config struct {
	Legs     [2]string // leg specs (files, block devices, iscsi:// URLs)
	Listen   []string  // NBD addresses, unix:PATH or tcp:HOST:PORT
	Control  string    // control socket, unix:PATH
	Device   string    // /dev/nbdN to attach, or ""
	KeepLeg  int       // -1, or the operator's choice of the leg to keep
	Name     string    // NBD export name
	ReadOnly bool
	// Engine options: IOTimeout, AutoReAdd, rates, LegOptions, Logger.
	// KeepLeg, Specs and Logger are set from this Config.
	Engine mirror.Options
	// KernConns and Ioctl tune the /dev/nbdN attach.
	KernConns int
	Ioctl     bool
	// Locks are this node's locks on the legs (taken before anything
	// touched them); a replacement leg named by leg-add is locked too.
	Locks *mirror.LegLocks
	// RetryInterval: how often a held start tries to assemble again
	// (default 2s).
	RetryInterval time.Duration
	Logger        *slog.Logger // default: text on stderr
	Stderr        io.Writer    // where the operator's explanations go (default os.Stderr)
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
	Slot  int    `json:"slot"`
	Path  string `json:"path,omitempty"`  // leg-add: a replacement leg
	Force bool   `json:"force,omitempty"` // leg-add: overwrite what the rules refuse
}

type verifyArgs struct {
	Repair bool `json:"repair"`
}

var volumeOps = []string{"status", "leg-fail", "leg-add", "resync", "verify"}

// Run assembles and serves the volume until ctx ends, then stops in order.
func Run(ctx context.Context, c Config) error {
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = 2 * time.Second
	}
	log := c.Logger
	// The control socket comes first, so that mirrorctl can explain a
	// volume that cannot start.
	if network, path, err := control.ParseAddr(c.Control); err == nil && network == "unix" {
		os.MkdirAll(filepath.Dir(path), 0o700)
	}
	ctl, err := control.Listen(c.Control)
	if err != nil {
		return err
	}
	defer ctl.Close()
	starting := func(json.RawMessage) (any, error) {
		return nil, errors.New("mirrord is starting: opening the legs and assembling the volume (an unreachable iSCSI array takes up to a few I/O timeouts); try again in a moment")
	}
	for _, op := range volumeOps {
		ctl.Handle(op, starting)
	}
	go ctl.Serve()

	vol, err := assembleOrHold(ctx, c, ctl)
	if err != nil || vol == nil {
		return err // nil, nil: ctx ended while holding
	}
	st := vol.Status()
	log.Info("volume assembled", "uuid", st.VolumeUUID, "size", st.SizeBytes, "state", st.State)

	srv, err := nbd.NewServer(vol, nbd.Options{ExportName: c.Name, Description: "hamirror volume " + st.VolumeUUID, ReadOnly: c.ReadOnly, Logger: log})
	if err != nil {
		vol.Close()
		return err
	}
	d := &daemon{vol: vol, srv: srv, log: log, open: c.Engine.OpenLeg, locks: c.Locks}
	d.register(ctl)
	for _, addr := range c.Listen {
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
	if c.Device != "" {
		if err := nbd.ProtectProcess(); err != nil {
			log.Warn("cannot fully protect mirrord from deadlocking on its own device", "err", err)
		}
		dev, err := nbd.Attach(srv, nbd.AttachOptions{Device: c.Device, Connections: c.KernConns,
			Identifier: "hamirror:" + st.VolumeUUID, ForceIoctl: c.Ioctl, Logger: log})
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

// assembleOrHold opens the legs and assembles the volume. When the legs
// cannot prove which copy is newest it holds (status explains, nothing is
// exported) and, unless it is a split brain, tries again every
// RetryInterval. It returns nil, nil when ctx ends while holding.
func assembleOrHold(ctx context.Context, c Config, ctl *control.Server) (*mirror.Volume, error) {
	opts := c.Engine
	opts.KeepLeg = c.KeepLeg
	opts.Specs = c.Legs
	opts.Logger = c.Logger
	if opts.OpenLeg == nil {
		lo := opts.LegOptions
		opts.OpenLeg = func(spec string) (mirror.Leg, error) { return mirror.OpenLeg(spec, lo) }
	}
	c.Engine = opts
	held := ""
	for {
		vol, err := assemble(c)
		if err == nil {
			return vol, nil
		}
		var sb *mirror.SplitBrainError
		var lone *mirror.LoneLegError
		var unread *mirror.UnreadableLegError
		switch {
		case errors.As(err, &sb):
			hold(ctl, c, "split-brain", err)
			if held != err.Error() {
				c.Logger.Error("SPLIT BRAIN: not exporting the volume", "explanation", err.Error())
				fmt.Fprintf(c.Stderr, "\nmirrord: %v\n\nTo resolve: decide which leg holds the data to keep, stop mirrord and restart it with\n  mirrord volume --keep-leg N --leg %s --leg %s %s\n\n",
					err, c.Legs[0], c.Legs[1], listenArgs(c.Listen))
			}
			<-ctx.Done()
			return nil, nil
		case errors.As(err, &lone) || errors.As(err, &unread):
			hold(ctl, c, "waiting", err)
			if held != err.Error() {
				held = err.Error()
				c.Logger.Error("NOT SERVING: the legs do not prove which copy is newest; trying again as legs come back", "explanation", held)
				fmt.Fprintf(c.Stderr, "\nmirrord: %v\n\nmirrord keeps trying every %v and starts by itself once the other leg is back. To start now on one leg, stop mirrord and restart it with\n  mirrord volume --keep-leg N --leg %s --leg %s %s\n\n",
					err, c.RetryInterval, c.Legs[0], c.Legs[1], listenArgs(c.Listen))
			}
		case errors.Is(err, mirror.ErrNoMetadata):
			return nil, fmt.Errorf("%w\nthese legs hold no hamirror metadata: create the mirror first with\n  mirrorctl create %s %s", err, c.Legs[0], c.Legs[1])
		default:
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(c.RetryInterval):
		}
	}
}

// assemble opens both legs (one that cannot be opened is passed as
// missing) and assembles them; on failure it closes what it opened.
func assemble(c Config) (*mirror.Volume, error) {
	var legs [2]mirror.Leg
	for i, spec := range c.Legs {
		l, err := c.Engine.OpenLeg(spec)
		if err != nil {
			c.Logger.Warn("leg cannot be opened; assembling without it (mirrorctl leg add brings it back)", "leg", spec, "err", err)
			continue
		}
		legs[i] = l
	}
	if legs[0] == nil && legs[1] == nil {
		return nil, fmt.Errorf("neither leg can be opened (%s, %s): %w", c.Legs[0], c.Legs[1], errNoLegOpen)
	}
	vol, err := mirror.Assemble(legs, c.Engine)
	if err != nil {
		for _, l := range legs {
			if l != nil {
				l.Close()
			}
		}
		return nil, err
	}
	return vol, nil
}

var errNoLegOpen = errors.New("no leg could be opened")

// hold answers the control socket for a volume that is not served: status
// says why, the other ops refuse with the way out.
func hold(ctl *control.Server, c Config, state string, why error) {
	st := daemonStatus{Status: mirror.Status{State: state, Error: why.Error()}}
	for i := range 2 {
		st.Legs[i] = mirror.LegStatus{Slot: i, Path: c.Legs[i], State: "unknown"}
	}
	var sb *mirror.SplitBrainError
	if errors.As(why, &sb) {
		for i := range 2 {
			st.Legs[i].State = "out_of_sync"
			if sb.Legs[i].Name != "" {
				st.Legs[i].Path = sb.Legs[i].Name
			}
		}
	}
	ctl.Handle("status", func(json.RawMessage) (any, error) { return st, nil })
	remedy := "the volume is not assembled (split brain): restart mirrord with --keep-leg 0 or --keep-leg 1"
	if state != "split-brain" {
		remedy = "the volume is not assembled: " + why.Error()
	}
	refuse := func(json.RawMessage) (any, error) { return nil, errors.New(remedy) }
	for _, op := range volumeOps[1:] {
		ctl.Handle(op, refuse)
	}
}

// daemon is a running volume and what serves it.
type daemon struct {
	locks *mirror.LegLocks // nil: no locking (tests)
	vol   *mirror.Volume
	srv   *nbd.Server
	log   *slog.Logger
	wg    sync.WaitGroup
	open  func(string) (mirror.Leg, error) // how leg-add opens a named replacement leg

	mu     sync.Mutex // guards what control handlers read while starting
	dev    *nbd.Device
	listen []string
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
			if d.locks != nil {
				var err error
				if drop, err = d.locks.Add(a.Path); err != nil {
					return nil, fmt.Errorf("leg add %d: %w", a.Slot, err)
				}
			}
			l, err := d.open(a.Path)
			if err != nil {
				drop()
				return nil, fmt.Errorf("leg add %d: %w", a.Slot, err)
			}
			leg = l
		}
		if err := d.vol.AddLegWith(a.Slot, leg, mirror.AddOptions{Force: a.Force}); err != nil {
			if leg != nil {
				leg.Close()
			}
			drop()
			return nil, fmt.Errorf("leg add %d: %w", a.Slot, err)
		}
		d.log.Info("leg added; resync started", "slot", a.Slot, "force", a.Force)
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
