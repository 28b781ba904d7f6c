package agents

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Stop kills what holds the mount, unmounts it (stacked mounts of the
// device at directory included) and checks that the device is free
// everywhere. See fsAgent.
func (a *fsAgent) Stop(ctx context.Context) error {
	for {
		mi, err := a.mounts()
		if err != nil {
			return err
		}
		e, ok := mountAt(mi, a.dir)
		if !ok || (a.mountedDevice(e) != nil) {
			// Nothing of ours at directory. The device must be free
			// too: a copy of the mount elsewhere keeps the file system
			// alive (and writable) after ours is gone.
			return a.freeAfterStop(ctx)
		}
		if below := mountsBelow(mi, a.dir); len(below) > 0 {
			return fmt.Errorf("filesystem %s: mounts below %s keep it busy: %v: unmount them (they are not the cluster's), then mirrorctl cleanup %s",
				a.name, a.dir, below, a.name)
		}
		dev := unix.Mkdev(e.major, e.minor)
		if err := a.killHolders(ctx, dev); err != nil {
			return err
		}
		err = unix.Unmount(a.dir, 0)
		switch {
		case err == nil:
			a.log.Info("file system unmounted", "device", e.source, "directory", a.dir)
		case errors.Is(err, unix.EBUSY):
			// Something opened a file after the scan, or a kernel user
			// (a swap file, a loop device on a file in it) holds it.
			if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
				hs, _ := findHolders(a.procDir, dev, os.Getpid())
				return fmt.Errorf("filesystem %s: %s stays busy (%w); processes: %s; a loop device or swap file on it also holds it (losetup -a, swapon): free it, then mirrorctl cleanup %s",
					a.name, a.dir, err, orNobody(holderList(hs)), a.name)
			}
		case errors.Is(err, unix.EINVAL):
			// Not a mount point any more (someone unmounted it meanwhile).
		default:
			return fmt.Errorf("filesystem %s: unmounting %s: %w", a.name, a.dir, err)
		}
	}
}

// mountedDevice is nil when the mount e is of our device.
func (a *fsAgent) mountedDevice(e mountEntry) error {
	rdev, err := a.deviceNumber()
	if err != nil {
		// The device node is gone while something is mounted at
		// directory: trust the mount table's source.
		if e.source == a.device {
			return nil
		}
		return err
	}
	if sameDevice(e, rdev) {
		return nil
	}
	return fmt.Errorf("%s is mounted at %s, not %s", e.source, a.dir, a.device)
}

// freeAfterStop waits until the device is free (when it exists at
// all), or ctx ends. A copy of the mount in another namespace is often
// short-lived (ip netns exec, unshare and the like copy every mount of
// the moment into the namespace they make): it goes with its process.
func (a *fsAgent) freeAfterStop(ctx context.Context) error {
	for {
		if _, err := os.Stat(a.device); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		err := a.deviceFree()
		if err == nil {
			return nil
		}
		if sleepCtx(ctx, 100*time.Millisecond) != nil {
			return err
		}
	}
}

// killHolders sends SIGTERM to the processes that use the file system,
// SIGKILL after the grace (at most half the time left), and returns
// once none is left, or an error naming them when ctx ends first.
func (a *fsAgent) killHolders(ctx context.Context, dev uint64) error {
	self := os.Getpid()
	grace := min(a.killGrace, remaining(ctx, a.killGrace)/2)
	killAt := time.Now().Add(grace)
	sig := syscall.SIGTERM
	sent := map[int]syscall.Signal{}
	for {
		hs, err := findHolders(a.procDir, dev, self)
		if err != nil {
			return fmt.Errorf("filesystem %s: %w", a.name, err)
		}
		if len(hs) == 0 {
			return nil
		}
		if sig == syscall.SIGTERM && !time.Now().Before(killAt) {
			sig = syscall.SIGKILL
		}
		for _, h := range hs {
			if sent[h.pid] == sig {
				continue
			}
			a.log.Warn("signalling a process that holds the file system", "pid", h.pid, "comm", h.comm, "how", h.how, "signal", sig.String())
			if err := syscall.Kill(h.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("filesystem %s: signalling %s: %w", a.name, h, err)
			}
			sent[h.pid] = sig
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("filesystem %s: %s is still held after SIGKILL by %s (%w): a process stuck in the kernel (state D) cannot die until its I/O returns; the file system stays mounted: free it, then mirrorctl cleanup %s",
				a.name, a.dir, holderList(hs), err, a.name)
		}
	}
}

func orNobody(s string) string {
	if s == "" {
		return "none found"
	}
	return s
}
