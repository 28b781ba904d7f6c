package halab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/testenv/hblab"
)

// detachLoop detaches dev. A filesystem a dead node had mounted is released
// by the kernel shortly after its mount namespace died; until then the
// device is busy, so detach retries for a while.
func detachLoop(dev string) error {
	var err error
	for range 50 {
		if err = run("losetup", "-d", dev); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// sweepStale removes what labs whose process died before its cleanup ran
// (a test binary killed by its timeout, a second Ctrl-C) left: the
// processes still running in their namespaces (tgtd, node PID 1s: they
// outlive their parent) and the loop devices on their nodes' own
// filesystems (found before the kill, released as at a node's crash), the
// namespaces, loop devices on their files and their folders. Only names
// halab-NAME-PID-RAND-... of dead PIDs are touched, in TMPDIR and in
// the folders named (Options.LUNDir).
func sweepStale(dirs ...string) {
	for _, ns := range hblab.StaleNetns("halab") {
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			var pids []int
			seen := map[string]bool{}
			for _, f := range strings.Fields(string(out)) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					continue
				}
				pids = append(pids, pid)
				if mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && !seen[mnt] {
					seen[mnt] = true
					loops, _ := loopsOf(pid)
					for _, l := range loops {
						l.release()
					}
				}
			}
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		run("ip", "netns", "del", ns)
	}
	var stale []string
	for _, root := range append([]string{os.TempDir()}, dirs...) {
		if root != "" {
			m, _ := filepath.Glob(filepath.Join(root, "halab-*"))
			stale = append(stale, m...)
		}
	}
	for _, d := range stale {
		f := strings.Split(filepath.Base(d), "-")
		if len(f) < 5 {
			continue
		}
		pid, err := strconv.Atoi(f[len(f)-3])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !os.IsNotExist(err) {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "KEPT")); err == nil {
			continue
		}
		if out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").Output(); err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], d+"/") {
					run("losetup", "-d", f[0])
				}
			}
		}
		os.RemoveAll(d)
	}
}
