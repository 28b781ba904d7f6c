package nbd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Legacy ioctls of /dev/nbdN (include/uapi/linux/nbd.h), the fallback when
// the kernel has no "nbd" generic netlink family.
const (
	ioctlSetSock       = 0xab00
	ioctlSetBlkSize    = 0xab01
	ioctlDoIt          = 0xab03
	ioctlClearSock     = 0xab04
	ioctlSetSizeBlocks = 0xab07
	ioctlDisconnect    = 0xab08
	ioctlSetTimeout    = 0xab09
	ioctlSetFlags      = 0xab0a
)

// AttachOptions configure Attach.
type AttachOptions struct {
	// Device is "/dev/nbdN". Empty lets the kernel pick a free device
	// (netlink only).
	Device string
	// Connections is the number of sockets the kernel spreads I/O over
	// (the export offers MULTI_CONN); default 2.
	Connections int
	// Timeout is the kernel's per-request timeout; default 60s, above the
	// engine's leg timeout, so a failing leg is failed by the engine, not
	// seen as a dead server by the kernel.
	Timeout time.Duration
	// DeadConnTimeout is how long the kernel queues I/O after the daemon
	// died, waiting for a restarted mirrord to RECONFIGURE; default 120s.
	DeadConnTimeout time.Duration
	// Identifier names the backend (e.g. "hamirror:VOLUME-UUID"); the
	// kernel only lets a RECONFIGURE with the same identifier take over.
	Identifier string
	// ForceIoctl skips netlink (for kernels without the nbd family).
	ForceIoctl bool
	// Logger receives attach events; nil discards.
	Logger *slog.Logger
}

// Device is an attached /dev/nbdN served by a Server.
type Device struct {
	Index      int
	Path       string
	Reclaimed  bool // the device was taken back from a previous daemon
	ViaNetlink bool

	srv     *Server
	log     *slog.Logger
	opts    AttachOptions
	serveWG sync.WaitGroup
	file    *os.File   // ioctl path: the open device
	doIt    chan error // ioctl path: NBD_DO_IT's result
	once    sync.Once

	// Netlink path: a kernel connection that ends without a DISCONNECT
	// (the kernel timed a request out and shut the socket, or the server
	// dropped it) is replaced with RECONFIGURE, so the device never waits
	// DeadConnTimeout for nothing.
	dialNL      func() (nbdGenl, genetlink.Family, func(), error)
	detaching   atomic.Bool
	lost        chan struct{} // one token per connection that ended
	stopMonitor chan struct{}
	monitorDone chan struct{}
}

// deviceIndex parses "/dev/nbdN" ("" gives -1).
func deviceIndex(path string) (int, error) {
	if path == "" {
		return -1, nil
	}
	base := strings.TrimPrefix(path, "/dev/")
	if !strings.HasPrefix(base, "nbd") {
		return -1, fmt.Errorf("nbd: %q is not an nbd device (want /dev/nbdN)", path)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(base, "nbd"))
	if err != nil || n < 0 {
		return -1, fmt.Errorf("nbd: %q is not an nbd device (want /dev/nbdN)", path)
	}
	return n, nil
}

// ProtectProcess keeps a daemon that serves its own kernel block device
// from deadlocking on it: PR_SET_IO_FLUSHER lets its allocations dip into
// reserves without recursing into I/O on the device, and mlockall keeps its
// pages from being swapped out through it. Both need root; each failure is
// reported, neither is fatal to the caller's decision.
func ProtectProcess() error {
	var errs []error
	if err := unix.Prctl(unix.PR_SET_IO_FLUSHER, 1, 0, 0, 0); err != nil {
		errs = append(errs, fmt.Errorf("PR_SET_IO_FLUSHER: %w", err))
	}
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
		errs = append(errs, fmt.Errorf("mlockall: %w", err))
	}
	return errors.Join(errs...)
}

// socketPairs makes n socket pairs, starts serving the server ends and
// returns the kernel ends (to be closed by the caller once handed over).
func (d *Device) socketPairs(n int) ([]int, error) {
	var kernel []int
	for range n {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			closeFDs(kernel)
			return nil, fmt.Errorf("nbd: socketpair: %w", err)
		}
		f := os.NewFile(uintptr(fds[0]), "nbd-server")
		nc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			unix.Close(fds[1])
			closeFDs(kernel)
			return nil, fmt.Errorf("nbd: socketpair: %w", err)
		}
		kernel = append(kernel, fds[1])
		name := d.nameOr("the nbd device")
		d.serveWG.Add(1)
		go func() {
			defer d.serveWG.Done()
			err := d.srv.ServeTransmission(nc)
			if d.detaching.Load() {
				return
			}
			d.log.Warn("kernel nbd connection ended", "device", name, "err", err)
			select {
			case d.lost <- struct{}{}:
			default:
			}
		}()
	}
	return kernel, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Attach hands srv's export to the kernel as a /dev/nbdN. If the device is
// still connected from a daemon that died (its sockets dead, the kernel
// waiting DeadConnTimeout for a reconnect), Attach takes it back with
// RECONFIGURE, so a mounted filesystem survives a mirrord restart.
// Without the netlink family it falls back to the ioctls (no reclaim).
func Attach(srv *Server, opts AttachOptions) (*Device, error) {
	if opts.Connections <= 0 {
		opts.Connections = 2
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.DeadConnTimeout <= 0 {
		opts.DeadConnTimeout = 120 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	idx, err := deviceIndex(opts.Device)
	if err != nil {
		return nil, err
	}
	d := newDevice(srv, idx, opts)
	if !opts.ForceIoctl {
		nl, err := genetlink.Dial(nil)
		if err == nil {
			defer nl.Close()
			fam, ferr := nl.GetFamily(genlFamily)
			if ferr == nil {
				if err := d.attachNetlink(nl, fam, opts); err != nil {
					d.detaching.Store(true)
					d.stopServing()
					return nil, err
				}
				d.startMonitor()
				return d, nil
			}
			err = ferr
		}
		if idx < 0 {
			return nil, fmt.Errorf("nbd: the kernel's nbd netlink family is unavailable (%w): load the nbd module, or name a --device for the ioctl path", err)
		}
		opts.Logger.Info("nbd netlink family unavailable, using ioctls", "err", err)
	}
	if idx < 0 {
		return nil, errors.New("nbd: the ioctl path needs a device path (/dev/nbdN)")
	}
	if err := d.attachIoctl(opts); err != nil {
		d.detaching.Store(true)
		d.stopServing()
		return nil, err
	}
	return d, nil
}

func newDevice(srv *Server, idx int, opts AttachOptions) *Device {
	path := opts.Device
	return &Device{Index: idx, Path: path, srv: srv, log: opts.Logger, opts: opts,
		lost: make(chan struct{}, 64), dialNL: dialGenl}
}

// dialGenl opens a generic netlink connection to the kernel's nbd family.
func dialGenl() (nbdGenl, genetlink.Family, func(), error) {
	nl, err := genetlink.Dial(nil)
	if err != nil {
		return nil, genetlink.Family{}, nil, fmt.Errorf("nbd: netlink: %w", err)
	}
	fam, err := nl.GetFamily(genlFamily)
	if err != nil {
		nl.Close()
		return nil, genetlink.Family{}, nil, fmt.Errorf("nbd: the kernel's nbd netlink family is unavailable: %w", err)
	}
	return nl, fam, func() { nl.Close() }, nil
}

// startMonitor replaces kernel connections that end while attached.
func (d *Device) startMonitor() {
	d.stopMonitor = make(chan struct{})
	d.monitorDone = make(chan struct{})
	go d.monitor()
}

func (d *Device) monitor() {
	defer close(d.monitorDone)
	for {
		select {
		case <-d.stopMonitor:
			return
		case <-d.lost:
		}
		for attempt := 1; ; attempt++ {
			err := d.replaceSocket()
			if err == nil {
				d.log.Info("gave the kernel a new nbd connection", "device", d.Path)
				break
			}
			// The kernel may not have marked the old socket dead yet
			// (ENOSPC): retry a few times; anything else is final.
			if !errors.Is(err, unix.ENOSPC) || attempt >= 20 {
				d.log.Error("cannot replace a lost kernel nbd connection", "device", d.Path, "err", err)
				break
			}
			select {
			case <-d.stopMonitor:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

// replaceSocket hands the kernel one fresh connection with RECONFIGURE.
func (d *Device) replaceSocket() error {
	nl, fam, closeNL, err := d.dialNL()
	if err != nil {
		return err
	}
	defer closeNL()
	fds, err := d.socketPairs(1)
	if err != nil {
		return err
	}
	defer closeFDs(fds)
	attrs, err := encodeReconfigure(d.Index, d.opts.Identifier, uint64(d.opts.DeadConnTimeout/time.Second), fds)
	if err != nil {
		return err
	}
	_, err = nl.Execute(genetlink.Message{
		Header: genetlink.Header{Command: nlCmdReconfigure, Version: fam.Version},
		Data:   attrs,
	}, fam.ID, netlink.Request|netlink.Acknowledge)
	if err != nil {
		return fmt.Errorf("nbd: netlink RECONFIGURE of %s: %w", d.Path, err)
	}
	return nil
}

// nbdGenl is the slice of genetlink.Conn the attach code uses (a fake
// kernel in tests).
type nbdGenl interface {
	Execute(m genetlink.Message, family uint16, flags netlink.HeaderFlags) ([]genetlink.Message, error)
}

func (d *Device) attachNetlink(nl nbdGenl, fam genetlink.Family, opts AttachOptions) error {
	d.ViaNetlink = true
	if d.Index >= 0 {
		st, err := netlinkStatus(nl, fam, d.Index)
		if err != nil {
			return err
		}
		if st.Connected {
			return d.reclaim(nl, fam, opts)
		}
	}
	fds, err := d.socketPairs(opts.Connections)
	if err != nil {
		return err
	}
	defer closeFDs(fds)
	attrs, err := encodeConnect(connectConfig{
		Index:           d.Index,
		SizeBytes:       uint64(d.srv.backend.Size()),
		BlockSize:       uint64(max(512, min(4096, d.srv.backend.BlockSize()))),
		ServerFlags:     d.srv.KernelFlags(),
		TimeoutSec:      uint64(opts.Timeout / time.Second),
		DeadConnTimeout: uint64(opts.DeadConnTimeout / time.Second),
		Identifier:      opts.Identifier,
		FDs:             fds,
	})
	if err != nil {
		return err
	}
	msgs, err := nl.Execute(genetlink.Message{
		Header: genetlink.Header{Command: nlCmdConnect, Version: fam.Version},
		Data:   attrs,
	}, fam.ID, netlink.Request)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("nbd: %s is in use by another server (nbd-client -d %s frees it): %w", d.nameOr("the device"), d.Path, err)
		}
		return fmt.Errorf("nbd: netlink CONNECT of %s: %w", d.nameOr("a device"), err)
	}
	if len(msgs) == 0 {
		return errors.New("nbd: netlink CONNECT: no reply from the kernel")
	}
	idx, err := decodeIndex(msgs[0].Data)
	if err != nil {
		return err
	}
	d.Index = idx
	d.Path = "/dev/nbd" + strconv.Itoa(idx)
	d.log.Info("attached kernel nbd device", "device", d.Path, "connections", opts.Connections)
	return nil
}

// reclaim gives a device whose server died new sockets.
func (d *Device) reclaim(nl nbdGenl, fam genetlink.Family, opts AttachOptions) error {
	fds, err := d.socketPairs(opts.Connections)
	if err != nil {
		return err
	}
	defer closeFDs(fds)
	attrs, err := encodeReconfigure(d.Index, opts.Identifier, uint64(opts.DeadConnTimeout/time.Second), fds)
	if err != nil {
		return err
	}
	_, err = nl.Execute(genetlink.Message{
		Header: genetlink.Header{Command: nlCmdReconfigure, Version: fam.Version},
		Data:   attrs,
	}, fam.ID, netlink.Request|netlink.Acknowledge)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("nbd: %s is connected to a live server (no dead connection to take over); stop that server first: %w", d.Path, err)
		}
		return fmt.Errorf("nbd: netlink RECONFIGURE of %s: %w", d.Path, err)
	}
	d.Reclaimed = true
	d.log.Info("took back kernel nbd device from a previous daemon", "device", d.Path)
	return nil
}

func netlinkStatus(nl nbdGenl, fam genetlink.Family, index int) (DeviceStatus, error) {
	attrs, err := encodeIndex(index)
	if err != nil {
		return DeviceStatus{}, err
	}
	msgs, err := nl.Execute(genetlink.Message{
		Header: genetlink.Header{Command: nlCmdStatus, Version: fam.Version},
		Data:   attrs,
	}, fam.ID, netlink.Request)
	if err != nil {
		return DeviceStatus{}, fmt.Errorf("nbd: netlink STATUS of /dev/nbd%d: %w", index, err)
	}
	for _, m := range msgs {
		devs, err := decodeStatus(m.Data)
		if err != nil {
			return DeviceStatus{}, err
		}
		for _, dev := range devs {
			if dev.Index == index {
				return dev, nil
			}
		}
	}
	// No such device yet: CONNECT with its index creates it (nbds_max=0).
	return DeviceStatus{Index: index}, nil
}

func (d *Device) nameOr(s string) string {
	if d.Path != "" {
		return d.Path
	}
	return s
}

func (d *Device) attachIoctl(opts AttachOptions) error {
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("nbd: opening %s: %w", d.Path, err)
	}
	fd := f.Fd()
	bs := uint64(max(512, min(4096, d.srv.backend.BlockSize())))
	steps := []struct {
		name string
		req  uint
		arg  uint64
	}{
		{"NBD_CLEAR_SOCK", ioctlClearSock, 0},
		{"NBD_SET_BLKSIZE", ioctlSetBlkSize, bs},
		{"NBD_SET_SIZE_BLOCKS", ioctlSetSizeBlocks, uint64(d.srv.backend.Size()) / bs},
		{"NBD_SET_FLAGS", ioctlSetFlags, d.srv.KernelFlags()},
		{"NBD_SET_TIMEOUT", ioctlSetTimeout, uint64(opts.Timeout / time.Second)},
	}
	for _, s := range steps {
		if err := ioctl(fd, s.req, s.arg); err != nil {
			f.Close()
			return fmt.Errorf("nbd: %s on %s: %w", s.name, d.Path, err)
		}
	}
	fds, err := d.socketPairs(opts.Connections)
	if err != nil {
		f.Close()
		return err
	}
	defer closeFDs(fds)
	for _, k := range fds {
		if err := ioctl(fd, ioctlSetSock, uint64(k)); err != nil {
			ioctl(fd, ioctlClearSock, 0)
			f.Close()
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("nbd: %s is in use by another server: %w", d.Path, err)
			}
			return fmt.Errorf("nbd: NBD_SET_SOCK on %s: %w", d.Path, err)
		}
	}
	d.file = f
	d.doIt = make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		d.doIt <- ioctl(fd, ioctlDoIt, 0) // returns at disconnect
	}()
	d.log.Info("attached kernel nbd device with ioctls", "device", d.Path)
	return nil
}

func ioctl(fd uintptr, req uint, arg uint64) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// Detach flushes the device's page cache to the server, disconnects it and
// waits for the kernel's connections to end. Unmount first.
func (d *Device) Detach() error {
	var err error
	d.once.Do(func() { err = d.detach() })
	return err
}

func (d *Device) detach() error {
	d.detaching.Store(true)
	if d.stopMonitor != nil {
		close(d.stopMonitor)
		<-d.monitorDone
	}
	if f, err := os.OpenFile(d.Path, os.O_RDWR, 0); err == nil {
		f.Sync() // write back the block device's page cache (FLUSH reaches the legs)
		f.Close()
	}
	var err error
	if d.ViaNetlink {
		err = d.disconnectNetlink()
	} else {
		if e := ioctl(d.file.Fd(), ioctlDisconnect, 0); e != nil {
			err = fmt.Errorf("nbd: NBD_DISCONNECT on %s: %w", d.Path, e)
		}
		select {
		case <-d.doIt:
		case <-time.After(30 * time.Second):
			err = errors.Join(err, fmt.Errorf("nbd: %s did not disconnect within 30s", d.Path))
		}
		ioctl(d.file.Fd(), ioctlClearSock, 0)
		d.file.Close()
	}
	if !d.waitServing(30 * time.Second) {
		err = errors.Join(err, fmt.Errorf("nbd: %s: kernel connections still open after disconnect", d.Path))
	}
	return err
}

func (d *Device) disconnectNetlink() error {
	nl, err := genetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("nbd: netlink: %w", err)
	}
	defer nl.Close()
	fam, err := nl.GetFamily(genlFamily)
	if err != nil {
		return fmt.Errorf("nbd: netlink family: %w", err)
	}
	return netlinkDisconnect(nl, fam, d.Index)
}

func netlinkDisconnect(nl nbdGenl, fam genetlink.Family, index int) error {
	attrs, err := encodeIndex(index)
	if err != nil {
		return err
	}
	_, err = nl.Execute(genetlink.Message{
		Header: genetlink.Header{Command: nlCmdDisconnect, Version: fam.Version},
		Data:   attrs,
	}, fam.ID, netlink.Request|netlink.Acknowledge)
	if err != nil {
		return fmt.Errorf("nbd: netlink DISCONNECT of /dev/nbd%d: %w", index, err)
	}
	return nil
}

// stopServing ends the server side of any socket pairs (attach failed).
func (d *Device) stopServing() { d.waitServing(0) }

func (d *Device) waitServing(limit time.Duration) bool {
	done := make(chan struct{})
	go func() {
		d.serveWG.Wait()
		close(done)
	}()
	if limit == 0 {
		// The kernel never took the sockets: their peers are closed, so
		// the serving goroutines end on their own.
		<-done
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(limit):
		return false
	}
}

// KernelStatus reports whether /dev/nbdN is connected, through netlink.
func KernelStatus(index int) (DeviceStatus, error) {
	nl, err := genetlink.Dial(nil)
	if err != nil {
		return DeviceStatus{}, fmt.Errorf("nbd: netlink: %w", err)
	}
	defer nl.Close()
	fam, err := nl.GetFamily(genlFamily)
	if err != nil {
		return DeviceStatus{}, fmt.Errorf("nbd: the kernel's nbd netlink family is unavailable: %w", err)
	}
	return netlinkStatus(nl, fam, index)
}
