package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/mirror/nbd"
	"github.com/hamirror/hamirror/resources"
)

// Options configure the volume resource.
type Options struct {
	// Legs are the two leg specs (iscsi:// URLs or paths).
	Legs [2]string
	// OpenLeg opens a leg by spec; default mirror.OpenLeg with
	// Mirror.LegOptions. The node hands out its own iSCSI sessions here.
	OpenLeg func(spec string) (mirror.Leg, error)
	// Mirror are the engine's options (timeouts, rates, hooks). Known and
	// the MMP fencing flag are set per start (Start's arguments).
	Mirror mirror.Options
	// Listen are NBD listen addresses (unix:PATH, tcp:HOST:PORT).
	Listen []string
	// Device attaches the kernel block device /dev/nbdN.
	Device string
	// Fuse attaches through nbdfuse and a loop device (hosts without the
	// nbd module): the export appears as Fuse/volume, the loop device
	// over it is the block device.
	Fuse string
	// Link, when set, is a symlink to the attached block device.
	Link       string
	ExportName string
	ReadOnly   bool
	Logger     *slog.Logger
	// ForceHint, when set, is added to an assembly refused because the
	// legs do not prove which copy is newest (a split brain, a lone leg,
	// an unreadable or blank leg: the engine's message names --keep-leg):
	// how to force where --keep-leg is not the way (the cluster's node).
	ForceHint string
}

// Volume is the volume resource: it assembles the mirror, serves it and
// attaches it as a block device; Stop undoes all of it in reverse.
type Volume struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	run   *running // nil while stopped
	known *mirror.KnownState
	fence bool
	keep  int // the next start keeps leg keep-1 (0: decide from the legs)
}

// running is one started instance.
type running struct {
	vol    *mirror.Volume
	srv    *nbd.Server
	dev    *nbd.Device
	fuse   *fuseAttach
	wg     sync.WaitGroup
	listen []string
	path   string // the block device, when attached
}

// New prepares the volume resource; nothing is opened until Start.
func New(opts Options) *Volume {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ExportName == "" {
		opts.ExportName = "hamirror"
	}
	return &Volume{opts: opts, log: opts.Logger}
}

var _ resources.Agent = (*Volume)(nil)

// Prepare sets what the next Start assembles with: the peer's knowledge
// of the volume (nil: none this run) and whether every other writer was
// fenced (the multi-mount check then need not wait).
func (v *Volume) Prepare(known *mirror.KnownState, fenced bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.known, v.fence = known, fenced
}

// KeepLeg makes the next Start keep leg slot's data where the legs do
// not prove which copy is newest (mirror.Options.KeepLeg): the operator's
// forcing choice after a refusal, for that one start only.
func (v *Volume) KeepLeg(slot int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keep = slot + 1
}

// Mirror returns the running volume (nil when stopped), for the leg,
// resync and verify operations.
func (v *Volume) Mirror() *mirror.Volume {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.run == nil {
		return nil
	}
	return v.run.vol
}

// Start assembles and serves the volume. It is idempotent.
func (v *Volume) Start(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.run != nil {
		return nil
	}
	r, err := v.start(ctx)
	if err != nil {
		return err
	}
	v.run = r
	return nil
}

func (v *Volume) start(ctx context.Context) (*running, error) {
	open := v.opts.OpenLeg
	if open == nil {
		open = func(spec string) (mirror.Leg, error) { return mirror.OpenLeg(spec, v.opts.Mirror.LegOptions) }
	}
	var legs [2]mirror.Leg
	for i, spec := range v.opts.Legs {
		l, err := open(spec)
		if err != nil {
			v.log.Warn("leg cannot be opened; assembling without it", "leg", spec, "err", err)
			continue
		}
		legs[i] = l
	}
	if legs[0] == nil && legs[1] == nil {
		return nil, fmt.Errorf("volume: neither leg can be opened (%s, %s)", v.opts.Legs[0], v.opts.Legs[1])
	}
	mo := v.opts.Mirror
	mo.Specs = v.opts.Legs
	mo.OpenLeg = open
	mo.Known = v.known
	mo.MMP.Fenced = v.fence
	if v.keep > 0 {
		mo.KeepLeg = v.keep - 1
		v.keep = 0
		v.log.Warn("forced by the operator: keeping this leg's data if the legs do not prove which copy is newest", "leg", mo.KeepLeg)
	}
	if mo.Logger == nil {
		mo.Logger = v.log
	}
	vol, err := mirror.Assemble(legs, mo)
	if err != nil {
		for _, l := range legs {
			if l != nil {
				l.Close()
			}
		}
		if v.opts.ForceHint != "" && strings.Contains(err.Error(), "--keep-leg") {
			return nil, fmt.Errorf("volume: %w; %s", err, v.opts.ForceHint)
		}
		return nil, fmt.Errorf("volume: %w", err)
	}
	r := &running{vol: vol}
	st := vol.Status()
	srv, err := nbd.NewServer(vol, nbd.Options{ExportName: v.opts.ExportName, Description: "hamirror volume " + st.VolumeUUID,
		ReadOnly: v.opts.ReadOnly, Logger: v.log})
	if err != nil {
		vol.Close()
		return nil, err
	}
	r.srv = srv
	listen := v.opts.Listen
	if v.opts.Fuse != "" {
		listen = append(listen[:len(listen):len(listen)], "unix:"+filepath.Join(v.opts.Fuse, "nbd.sock"))
	}
	for _, addr := range listen {
		if _, path, ok := cutUnix(addr); ok {
			os.MkdirAll(filepath.Dir(path), 0o700)
		}
		ln, err := nbd.Listen(addr)
		if err != nil {
			v.stopRunning(r)
			return nil, fmt.Errorf("volume: %w", err)
		}
		r.listen = append(r.listen, addr)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := srv.Serve(ln); err != nil {
				v.log.Error("NBD listener stopped", "addr", addr, "err", err)
			}
		}()
	}
	switch {
	case v.opts.Device != "":
		if err := nbd.ProtectProcess(); err != nil {
			v.log.Warn("cannot fully protect mirrord from deadlocking on its own device", "err", err)
		}
		dev, err := nbd.Attach(srv, nbd.AttachOptions{Device: v.opts.Device, Identifier: "hamirror:" + st.VolumeUUID, Logger: v.log})
		if err != nil {
			v.stopRunning(r)
			return nil, fmt.Errorf("volume: %w", err)
		}
		r.dev, r.path = dev, dev.Path
	case v.opts.Fuse != "":
		fa, err := attachFuse(ctx, v.opts.Fuse, filepath.Join(v.opts.Fuse, "nbd.sock"), v.log)
		if err != nil {
			v.stopRunning(r)
			return nil, fmt.Errorf("volume: %w", err)
		}
		r.fuse, r.path = fa, fa.loop
	}
	if v.opts.Link != "" && r.path != "" {
		if err := replaceSymlink(r.path, v.opts.Link); err != nil {
			v.stopRunning(r)
			return nil, fmt.Errorf("volume: %w", err)
		}
	}
	v.log.Info("volume started", "uuid", st.VolumeUUID, "state", st.State, "device", r.path, "listen", r.listen)
	return r, nil
}

// Stop detaches the device, drains NBD clients, flushes both legs and
// marks the volume clean. It is idempotent.
func (v *Volume) Stop(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.run == nil {
		return nil
	}
	err := v.stopRunning(v.run)
	v.run = nil
	return err
}

func (v *Volume) stopRunning(r *running) error {
	var errs []error
	if v.opts.Link != "" {
		if target, err := os.Readlink(v.opts.Link); err == nil && target == r.path {
			os.Remove(v.opts.Link)
		}
	}
	if r.fuse != nil {
		errs = append(errs, r.fuse.detach())
	}
	if r.dev != nil {
		errs = append(errs, r.dev.Detach())
	}
	if r.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := r.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("NBD clients did not finish within 30s: %w", err))
		}
		cancel()
	}
	r.wg.Wait()
	switch err := r.vol.Close(); {
	case err == nil, errors.Is(err, mirror.ErrClosed):
	case errors.Is(err, mirror.ErrFenced), errors.Is(err, mirror.ErrInUse):
		// A fenced node, or one whose multi-mount protection found another
		// owner, cannot mark the volume clean, and must not: the new owner
		// runs it. Nothing of it runs here any more.
		v.log.Warn("volume closed without marking it clean: another node owns it now", "err", err)
	default:
		errs = append(errs, fmt.Errorf("closing the volume: %w", err))
	}
	return errors.Join(errs...)
}

// Monitor reports a volume that stopped serving (no usable leg, fenced)
// as failed; a degraded or resyncing volume is running.
func (v *Volume) Monitor(ctx context.Context) error {
	v.mu.Lock()
	r := v.run
	v.mu.Unlock()
	if r == nil {
		return resources.ErrNotRunning
	}
	st := r.vol.Status()
	switch st.State {
	case "failed", "fenced":
		return fmt.Errorf("volume %s: %s", st.State, st.Error)
	}
	if r.fuse != nil {
		if err := r.fuse.check(); err != nil {
			return err
		}
	}
	return nil
}

// Status is the running volume's status and what serves it.
type Status struct {
	mirror.Status
	Device string   `json:"device,omitempty"`
	Listen []string `json:"listen,omitempty"`
	NBD    int      `json:"nbd_connections"`
}

// Status reports the running volume (ok false when stopped).
func (v *Volume) Status() (Status, bool) {
	v.mu.Lock()
	r := v.run
	v.mu.Unlock()
	if r == nil {
		return Status{}, false
	}
	return Status{Status: r.vol.Status(), Device: r.path, Listen: r.listen, NBD: r.srv.Connections()}, true
}

func cutUnix(addr string) (network, path string, ok bool) {
	if len(addr) > 5 && addr[:5] == "unix:" {
		return "unix", addr[5:], true
	}
	return "", "", false
}

// replaceSymlink points link at target atomically.
func replaceSymlink(target, link string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, link)
}
