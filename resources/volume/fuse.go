package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// fuseAttach is the volume attached as a block device without the kernel's
// nbd module: nbdfuse (libnbd) exposes the NBD export as a file in a FUSE
// mount, and a loop device is set up over that file. Hosts that lack nbd
// (containers, this project's network-namespace lab) still get a real
// block device to make a file system on. It is slower than /dev/nbdN (two
// extra copies per request) and is meant for those hosts only.
type fuseAttach struct {
	dir  string // the FUSE mount point
	file string // the export as a file
	loop string // /dev/loopN
	back string // the loop device's backing file as the kernel names it
	cmd  *exec.Cmd
	done chan error
	log  *slog.Logger
}

// attachFuse starts nbdfuse on the unix socket sock, waits for the export
// to appear and sets up a loop device over it.
func attachFuse(ctx context.Context, base, sock string, log *slog.Logger) (*fuseAttach, error) {
	for _, tool := range []string{"nbdfuse", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("volume.fuse needs %s (Debian packages nbdfuse and mount): %w", tool, err)
		}
	}
	f := &fuseAttach{dir: filepath.Join(base, "mnt"), log: log, done: make(chan error, 1)}
	f.file = filepath.Join(f.dir, "volume")
	exec.Command("umount", "-l", f.dir).Run() // a mount left by a killed predecessor
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return nil, err
	}
	f.cmd = exec.Command("nbdfuse", f.file, "--unix", sock)
	var stderr strings.Builder
	f.cmd.Stderr = &stderr
	if err := f.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting nbdfuse: %w", err)
	}
	go func() { f.done <- f.cmd.Wait() }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if fi, err := os.Stat(f.file); err == nil && fi.Size() > 0 {
			break
		}
		select {
		case err := <-f.done:
			f.done <- err
			return nil, fmt.Errorf("nbdfuse exited before the export appeared: %v: %s", err, strings.TrimSpace(stderr.String()))
		case <-ctx.Done():
			f.detach()
			return nil, fmt.Errorf("waiting for nbdfuse to expose the export: %w", ctx.Err())
		case <-tick.C:
		}
	}
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", "--direct-io=on", f.file).Output()
	if err != nil {
		// Some kernels refuse direct I/O on a FUSE file: fall back.
		out, err = exec.CommandContext(ctx, "losetup", "--find", "--show", f.file).Output()
	}
	if err != nil {
		f.detach()
		return nil, fmt.Errorf("losetup over %s: %w", f.file, exitDetail(err))
	}
	f.loop = strings.TrimSpace(string(out))
	f.back, _ = loopBackFile(f.loop)
	log.Info("volume attached through nbdfuse", "loop", f.loop, "file", f.file)
	return f, nil
}

// check reports an nbdfuse that died.
func (f *fuseAttach) check() error {
	select {
	case err := <-f.done:
		f.done <- err
		return fmt.Errorf("nbdfuse exited: %v (the block device %s is gone)", err, f.loop)
	default:
		return nil
	}
}

// detach removes the loop device, unmounts the FUSE file system and ends
// nbdfuse.
func (f *fuseAttach) detach() error {
	var errs []error
	if f.loop != "" {
		if err := f.detachLoop(); err != nil {
			errs = append(errs, err)
		}
	}
	if out, err := exec.Command("umount", f.dir).CombinedOutput(); err != nil && mounted(f.dir) {
		if lerr := exec.Command("umount", "-l", f.dir).Run(); lerr != nil {
			errs = append(errs, fmt.Errorf("umount %s: %v: %s", f.dir, err, strings.TrimSpace(string(out))))
		}
	}
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
		f.cmd.Process.Signal(syscall.SIGKILL)
		<-f.done
	}
	return errors.Join(errs...)
}

// detachLoop detaches the loop device if it still serves the export. One
// that no longer does is done: loop devices are the host's, and another
// tool (or a lab's clean-up) may have detached it, after which its number
// may serve someone else's file, which must not be detached.
func (f *fuseAttach) detachLoop() error {
	ours := func() bool {
		back, ok := loopBackFile(f.loop)
		return f.back == "" || ok && back == f.back // unknown at attach: assume ours
	}
	if !ours() {
		f.log.Warn("the volume's loop device was detached already", "loop", f.loop)
		return nil
	}
	out, err := exec.Command("losetup", "-d", f.loop).CombinedOutput()
	if err == nil || !ours() {
		return nil
	}
	return fmt.Errorf("losetup -d %s: %v: %s", f.loop, err, strings.TrimSpace(string(out)))
}

// mounted reports whether dir is a mount point (true when unsure).
func mounted(dir string) bool {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return false
	}
	err := exec.Command("mountpoint", "-q", dir).Run()
	var ee *exec.ExitError
	return err == nil || !errors.As(err, &ee) || ee.ExitCode() != 32
}

// loopBackFile is the file loop device dev serves (false: none, or dev
// cannot be read).
func loopBackFile(dev string) (string, bool) {
	out, err := exec.Command("losetup", "--noheadings", "--output", "BACK-FILE", dev).Output()
	back := strings.TrimSpace(string(out))
	return back, err == nil && back != ""
}

func exitDetail(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}
