package halab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Loop devices are the host's, not a node's: one a node attaches (the
// volume's nbdfuse file under a loop device, in hamirror's lab) outlives
// the node's processes, and once the node's mount namespace is gone the
// kernel names its backing file by the path inside its own mount
// ("/volume"), which no longer says whose it is. So the lab finds a
// node's loop devices while the node runs, right before it kills the
// node (Crash, Close) or one of its daemons, marks them to be detached
// as the node's reboot would, and checks later that they went. It never
// touches a loop device it did not find on a node's own filesystems:
// other tests and developers use this host's loop devices too.

// Loop is one attachment of a loop device: the device and its disk
// sequence number (/sys/block/loopN/diskseq, a count of the kernel's
// attachments), which tells it from a later attachment of the same
// device by someone else.
type Loop struct {
	Dev string // /dev/loopN
	Seq uint64
}

func (l Loop) String() string { return fmt.Sprintf("%s (diskseq %d)", l.Dev, l.Seq) }

// Attached reports whether the attachment is still there.
func (l Loop) Attached() bool {
	name := filepath.Base(l.Dev)
	if _, err := os.Stat(filepath.Join("/sys/block", name, "loop", "backing_file")); err != nil {
		return false
	}
	seq, err := diskSeq(name)
	return err == nil && seq == l.Seq
}

// release detaches the attachment now if nothing holds it, else marks it
// to be detached by the kernel when its last user lets go (LOOP_CLR_FD on
// a busy device sets autoclear): a filesystem mounted in a node that is
// dying. The sequence number is checked on an open descriptor, which
// keeps the attachment from changing meanwhile, so a device attached
// again since (by anyone) is left alone.
func (l Loop) release() error {
	f, err := os.Open(l.Dev)
	if err != nil {
		if !l.Attached() {
			return nil
		}
		return fmt.Errorf("detaching %v: %w", l, err)
	}
	defer f.Close()
	if !l.Attached() {
		return nil
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detaching %v: %w", l, err)
	}
	return nil
}

// releaseAll releases loops and returns those still attached after
// waiting up to wait for the kernel to let go of them.
func releaseAll(loops []Loop, wait time.Duration) ([]Loop, error) {
	var errs []error
	for _, l := range loops {
		errs = append(errs, l.release())
	}
	deadline := time.Now().Add(wait)
	for {
		var left []Loop
		for _, l := range loops {
			if l.Attached() {
				left = append(left, l)
			}
		}
		if len(left) == 0 || !time.Now().Before(deadline) {
			return left, errors.Join(errs...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loopsOf returns the loop devices whose backing file lives on a
// filesystem that the mount namespace of process pid has and the lab's
// own mount namespace does not: those a node attached (a file on its
// private /run, on a FUSE mount of its own), not a loop device on a file
// both see (Lab.LoopDevice).
func loopsOf(pid int) ([]Loop, error) {
	theirs, err := readMounts(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	ours, err := readMounts("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	shared := map[string]bool{}
	for _, m := range ours {
		shared[m.dev] = true
	}
	own := map[string]bool{}
	for _, m := range theirs {
		if !shared[m.dev] {
			own[m.dev] = true
		}
	}
	if len(own) == 0 {
		return nil, nil
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	type answer struct {
		loop Loop
		err  error
	}
	answers := make(chan answer, len(files))
	asked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil { // detached meanwhile
			continue
		}
		// The path is the file's in its own mount namespace: the mount
		// it is under there, if a mount of the node's own, makes it a
		// candidate; its device number decides.
		if !own[mountOf(theirs, strings.TrimSpace(string(b)))] {
			continue
		}
		asked++
		name := filepath.Base(filepath.Dir(filepath.Dir(f)))
		go func() {
			l, dev, err := loopBacking(name)
			if err == nil && !own[dev] {
				l = Loop{}
			}
			answers <- answer{l, err}
		}()
	}
	var loops []Loop
	var errs []error
	timeout := time.After(2 * time.Second)
	for range asked {
		select {
		case a := <-answers:
			if a.err != nil {
				errs = append(errs, a.err)
			} else if a.loop.Dev != "" {
				loops = append(loops, a.loop)
			}
		case <-timeout:
			// A backing filesystem that does not answer (a stopped FUSE
			// daemon): its goroutine ends when the filesystem does.
			return loops, errors.Join(append(errs, errors.New("a loop device's backing file did not answer within 2s"))...)
		}
	}
	return loops, errors.Join(errs...)
}

// loopBacking returns loop device name's attachment and the MAJ:MIN of
// its backing file's filesystem.
func loopBacking(name string) (Loop, string, error) {
	f, err := os.Open("/dev/" + name)
	if err != nil {
		return Loop{}, "", fmt.Errorf("reading loop device %s: %w", name, err)
	}
	defer f.Close()
	seq, err := diskSeq(name)
	if err != nil {
		return Loop{}, "", err
	}
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if errors.Is(err, unix.ENXIO) {
		return Loop{}, "", nil // not attached (any more)
	}
	if err != nil {
		return Loop{}, "", fmt.Errorf("reading loop device %s: %w", name, err)
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(info.Device), unix.Minor(info.Device))
	return Loop{Dev: "/dev/" + name, Seq: seq}, dev, nil
}

func diskSeq(name string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", name, "diskseq"))
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// mount is one line of a mountinfo file: the filesystem's MAJ:MIN and
// where it is mounted.
type mount struct{ dev, point string }

func readMounts(path string) ([]mount, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseMountinfo(string(b)), nil
}

// parseMountinfo reads the MAJ:MIN (field 3) and mount point (field 5,
// with spaces and the like escaped as \ooo) of each line of a mountinfo.
func parseMountinfo(s string) []mount {
	var ms []mount
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		ms = append(ms, mount{dev: f[2], point: unescapeMountinfo(f[4])})
	}
	return ms
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountOf returns the MAJ:MIN of the mount path is under: the longest
// mount point that is path or a folder above it, the last one mounted
// when several share that point.
func mountOf(ms []mount, path string) string {
	dev, best := "", -1
	for _, m := range ms {
		p := strings.TrimSuffix(m.point, "/")
		if (path == m.point || path == p || strings.HasPrefix(path, p+"/")) && len(p) >= best {
			dev, best = m.dev, len(p)
		}
	}
	return dev
}
