package agents

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hamirror/hamirror/resources"
)

// defaultKillGrace is how long processes holding the mount get after
// SIGTERM before SIGKILL: time to flush and exit cleanly, short against
// the stop timeout. The database and the application stop before the
// file system, so what is left are stragglers (shells, backups).
const defaultKillGrace = 5 * time.Second

// fsAgent mounts a file system (normally on the mirrored volume).
//
//	type: filesystem
//	device: /dev/nbd0                 # a block device
//	directory: /srv/data              # created if missing
//	fstype: ext4                      # ext4 or xfs
//	options: noatime,errors=remount-ro   # optional, mount(8) -o syntax
//	fsck: auto                        # auto, always or never (ext4; xfs never needs one)
//	kill_grace: 5s                    # SIGTERM to SIGKILL of processes holding it at stop
//
// Start refuses a device in use (mounted elsewhere, in any mount
// namespace, or held open exclusively), runs e2fsck -p when fsck says so
// (auto: only when the superblock says the kernel cannot make the file
// system consistent by itself; see needsFsck), then mounts. XFS replays
// its log at mount; a damaged XFS fails the mount ("Structure needs
// cleaning") and needs xfs_repair by hand, never automatically (-L
// throws the log away).
//
// Stop kills what holds the mount (SIGTERM, then SIGKILL after
// kill_grace; found by walking /proc, see findHolders), unmounts, and
// then checks that the device is free in every mount namespace. It never
// unmounts lazily: a lazy unmount only hides the name while writers go
// on, so the volume below could be stopped, or taken over by the peer,
// under a live file system. A process that copied the mount into a
// namespace of its own (ip netns exec, unshare -m, a service with a
// private /tmp started while it was mounted) keeps the file system alive
// after ours is gone: Stop waits for it until its deadline and then
// fails, naming the process. A stop that cannot free the device fails
// (the group then stays blocked and says so) rather than pretend.
//
// Monitor: nil while the device is mounted at directory, read-write as
// configured, and a read of the directory answers in time;
// resources.ErrNotRunning when nothing is mounted there.
type fsAgent struct {
	name, device, dir, fstype string
	options                   string
	flags                     uintptr
	data                      string
	fsck                      string
	killGrace                 time.Duration
	procDir                   string
	log                       *slog.Logger

	mu      sync.Mutex
	probing bool // a read of the mount has not returned yet (the device may be hung)
}

func newFilesystem(name string, p *params, env Env) (resources.Agent, error) {
	a := &fsAgent{name: name, log: env.Log, procDir: "/proc"}
	a.device = p.path("device", true, "")
	a.dir = p.path("directory", true, "")
	a.fstype = p.choice("fstype", "", "ext4", "xfs")
	a.options = p.str("options", false, "")
	a.fsck = p.choice("fsck", "auto", "auto", "always", "never")
	a.killGrace = p.duration("kill_grace", defaultKillGrace, 0, 10*time.Minute)
	if a.dir == "/" {
		p.fail("directory", "must not be /")
	}
	var err error
	if a.flags, a.data, err = parseMountOptions(a.options); err != nil {
		p.fail("options", "%v", err)
	}
	if a.fstype == "xfs" && a.fsck == "always" {
		p.fail("fsck", "xfs has no preen mode: it replays its log at mount; run xfs_repair by hand when a mount says so")
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	return a, nil
}

// deviceNumber returns the device's number (st_rdev); it must be a
// block device.
func (a *fsAgent) deviceNumber() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(a.device, &st); err != nil {
		return 0, fmt.Errorf("filesystem %s: device %s: %w (is the volume before it in the group started?)", a.name, a.device, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("filesystem %s: %s is not a block device", a.name, a.device)
	}
	return st.Rdev, nil
}

func (a *fsAgent) mounts() ([]mountEntry, error) {
	m, err := readMountinfo(a.procDir + "/thread-self/mountinfo") // the calling thread's namespace
	if err != nil {
		return nil, fmt.Errorf("filesystem %s: reading the mount table: %w", a.name, err)
	}
	return m, nil
}

func sameDevice(e mountEntry, rdev uint64) bool {
	return e.major == unix.Major(rdev) && e.minor == unix.Minor(rdev)
}

func (a *fsAgent) Monitor(ctx context.Context) error {
	mi, err := a.mounts()
	if err != nil {
		return err
	}
	e, ok := mountAt(mi, a.dir)
	if !ok {
		return fmt.Errorf("filesystem %s: nothing is mounted at %s: %w", a.name, a.dir, resources.ErrNotRunning)
	}
	rdev, err := a.deviceNumber()
	if err != nil {
		return fmt.Errorf("%w (and %s is still mounted at %s)", err, e.source, a.dir)
	}
	if !sameDevice(e, rdev) {
		return fmt.Errorf("filesystem %s: %s (%d:%d) is mounted at %s, not %s", a.name, e.source, e.major, e.minor, a.dir, a.device)
	}
	if e.readOnly() && a.flags&unix.MS_RDONLY == 0 {
		return fmt.Errorf("filesystem %s: %s is read-only but configured read-write: the kernel remounted it after errors (see dmesg); the group will stop it and fsck at the next start", a.name, a.dir)
	}
	return a.probe(ctx)
}

// probe reads the directory, within ctx. A read stuck in the kernel (a
// hung device) cannot be interrupted: it is left to finish on its own,
// and later probes fail at once until it has.
func (a *fsAgent) probe(ctx context.Context) error {
	a.mu.Lock()
	if a.probing {
		a.mu.Unlock()
		return fmt.Errorf("filesystem %s: an earlier read of %s has not returned: the device is hung", a.name, a.dir)
	}
	a.probing = true
	a.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		f, err := os.Open(a.dir)
		if err == nil {
			if _, err = f.Readdirnames(1); errors.Is(err, io.EOF) {
				err = nil // empty
			}
			f.Close()
		}
		a.mu.Lock()
		a.probing = false
		a.mu.Unlock()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("filesystem %s: reading %s: %w", a.name, a.dir, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("filesystem %s: reading %s did not answer in time (%w): the device is hung or very slow", a.name, a.dir, ctx.Err())
	}
}

func (a *fsAgent) Start(ctx context.Context) error {
	rdev, err := a.deviceNumber()
	if err != nil {
		return err
	}
	mi, err := a.mounts()
	if err != nil {
		return err
	}
	if e, ok := mountAt(mi, a.dir); ok {
		if sameDevice(e, rdev) {
			return nil
		}
		return fmt.Errorf("filesystem %s: %s is already mounted at %s: unmount it (umount %s) or choose another directory", a.name, e.source, a.dir, a.dir)
	}
	if pts := mountsOf(mi, unix.Major(rdev), unix.Minor(rdev)); len(pts) > 0 {
		return fmt.Errorf("filesystem %s: %s is already mounted at %v: unmount it there first", a.name, a.device, pts)
	}
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		return fmt.Errorf("filesystem %s: creating the mount point: %w", a.name, err)
	}
	if err := a.deviceFree(); err != nil {
		return err
	}
	if a.fstype == "ext4" {
		if err := a.fsckExt4(ctx); err != nil {
			return err
		}
	}
	if err := a.mount(ctx); err != nil {
		return err
	}
	a.log.Info("file system mounted", "device", a.device, "directory", a.dir)
	return nil
}

// deviceFree checks that nothing mounts or holds the device exclusively,
// in any mount namespace: the kernel refuses O_EXCL then.
func (a *fsAgent) deviceFree() error {
	fd, err := unix.Open(a.device, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if errors.Is(err, unix.EBUSY) {
		rdev, _ := a.deviceNumber()
		where := namespacesMounting(a.procDir, unix.Major(rdev), unix.Minor(rdev))
		return fmt.Errorf("filesystem %s: %s is in use (mounted in another mount namespace or opened exclusively; %s): stop what holds it, then mirrorctl cleanup %s",
			a.name, a.device, orNone(holderList(where)), a.name)
	}
	return fmt.Errorf("filesystem %s: opening %s: %w", a.name, a.device, err)
}

func orNone(s string) string {
	if s == "" {
		return "no other mount namespace has it"
	}
	return "mounted in the namespaces of " + s
}

// mount calls mount(2) on a goroutine: a mount on a hung device blocks
// in the kernel and cannot be interrupted; ctx's end returns an error
// and a late success is undone by the next Stop.
func (a *fsAgent) mount(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- unix.Mount(a.device, a.dir, a.fstype, a.flags, a.data) }()
	select {
	case err := <-done:
		if err != nil {
			hint := "see dmesg"
			if errors.Is(err, syscall.EUCLEAN) {
				hint = "the file system is damaged: repair it by hand (e2fsck -f, or xfs_repair without -L), then mirrorctl cleanup"
			} else if errors.Is(err, syscall.EINVAL) {
				hint = "wrong fstype or an option the file system rejects; see dmesg"
			}
			return fmt.Errorf("filesystem %s: mount -t %s %s %s: %w (%s)", a.name, a.fstype, a.device, a.dir, err, hint)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("filesystem %s: mounting %s did not finish in time (%w): the device is hung or the journal replay is long; raise start_timeout", a.name, a.device, ctx.Err())
	}
}
