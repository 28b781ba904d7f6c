package agents

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// holder is a process that uses a file system, and how.
type holder struct {
	pid  int
	comm string
	how  string // "cwd", "root", "exe", "fd 3", "maps"
}

func (h holder) String() string { return fmt.Sprintf("%d (%s, %s)", h.pid, h.comm, h.how) }

// findHolders walks procDir (/proc) for processes that use files on the
// file system whose device number is dev: their working directory, root,
// executable, open files and memory-mapped files. It compares device
// numbers (stat through the /proc links), not paths, so it finds files
// whatever name or mount namespace they are seen through and deleted
// files still open. Processes that exit meanwhile are skipped; self is
// never listed.
func findHolders(procDir string, dev uint64, self int) ([]holder, error) {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("listing processes in %s: %w", procDir, err)
	}
	var out []holder
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if how := usesDevice(filepath.Join(procDir, e.Name()), dev); how != "" {
			out = append(out, holder{pid: pid, comm: comm(procDir, pid), how: how})
		}
	}
	return out, nil
}

// usesDevice says how the process at dir uses the device, or "".
func usesDevice(dir string, dev uint64) string {
	on := func(path string) bool {
		var st unix.Stat_t
		return unix.Stat(path, &st) == nil && st.Dev == dev
	}
	for _, l := range []string{"cwd", "root", "exe"} {
		if on(filepath.Join(dir, l)) {
			return l
		}
	}
	fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
	for _, fd := range fds {
		if on(filepath.Join(dir, "fd", fd.Name())) {
			return "fd " + fd.Name()
		}
	}
	if maps, err := os.ReadFile(filepath.Join(dir, "maps")); err == nil && mapsUseDevice(maps, dev) {
		return "maps"
	}
	return ""
}

// mapsUseDevice reports whether a /proc/PID/maps listing maps a file of
// the device ("address perms offset MAJ:MIN inode path", numbers in hex).
func mapsUseDevice(maps []byte, dev uint64) bool {
	want := fmt.Sprintf("%02x:%02x", unix.Major(dev), unix.Minor(dev))
	sc := bufio.NewScanner(bytes.NewReader(maps))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 5 && f[4] != "0" && strings.EqualFold(f[3], want) {
			return true
		}
	}
	return false
}

func comm(procDir string, pid int) string {
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "comm"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// namespacesMounting returns one process per mount namespace other than
// ours in which the device is mounted: such a copy keeps the file system
// alive after we unmount ours (a container, a service with a private
// /tmp started while it was mounted).
func namespacesMounting(procDir string, major, minor uint32) []holder {
	var ours unix.Stat_t
	if unix.Stat(filepath.Join(procDir, "thread-self", "ns", "mnt"), &ours) != nil {
		return nil
	}
	seen := map[uint64]bool{ours.Ino: true}
	ents, _ := os.ReadDir(procDir)
	var out []holder
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var ns unix.Stat_t
		if unix.Stat(filepath.Join(procDir, e.Name(), "ns", "mnt"), &ns) != nil || seen[ns.Ino] {
			continue
		}
		seen[ns.Ino] = true
		mi, err := readMountinfo(filepath.Join(procDir, e.Name(), "mountinfo"))
		if err != nil {
			continue
		}
		if pts := mountsOf(mi, major, minor); len(pts) > 0 {
			out = append(out, holder{pid: pid, comm: comm(procDir, pid), how: "mount namespace with " + strings.Join(pts, ", ")})
		}
	}
	slices.SortFunc(out, func(a, b holder) int { return a.pid - b.pid })
	return out
}

func holderList(hs []holder) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.String()
	}
	return strings.Join(s, ", ")
}
