package hademo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Footprint is what one lab put on the host, recorded while it runs so that
// after its teardown Leftovers can say what is still there: its network
// namespaces (by name prefix, and by inode: a process still inside one
// keeps it alive after `ip netns del`), its folder, and the FUSE mounts of
// its nodes (the volume's nbdfuse file), whose loop devices are the host's
// and outlive a node that was killed.
//
// It looks only at what carries the lab's own names, lives in its own
// namespaces, or is a loop device recorded while it was the lab's (same
// name and size, its file's mount gone since), so the labs of other tests
// running beside it on the host are neither counted nor touched.
type Footprint struct {
	Prefix string // every namespace of the lab is named Prefix-ROLE
	Dir    string // the lab's folder

	mu    sync.Mutex
	netns map[uint64]string // inode -> name
	// loops are the loop devices seen on the nodes' FUSE mounts, with
	// their disk sequence number (/sys/block/loopN/diskseq, new at each
	// attachment). Once a node's mount namespace is gone, the kernel
	// shows its loop device's file as "/volume" with no MAJ:MIN: the
	// name and the sequence number still tell it from other labs'
	// devices. A MAJ:MIN alone never does: the kernel gives a dead
	// mount's number to the next FUSE mount, maybe another lab's.
	loops map[string]uint64
}

// NewFootprint returns an empty footprint of the lab whose namespaces are
// named prefix-ROLE and whose folder is dir.
func NewFootprint(prefix, dir string) *Footprint {
	return &Footprint{Prefix: prefix, Dir: dir, netns: map[uint64]string{}, loops: map[string]uint64{}}
}

// Record adds what the lab holds now: its namespaces and the loop devices
// on the FUSE mounts seen by any process inside them. Call it whenever the
// lab has changed (nodes booted, volume attached) and once more right
// before teardown.
func (f *Footprint) Record() {
	names, _ := filepath.Glob("/var/run/netns/" + f.Prefix + "-*")
	f.mu.Lock()
	for _, p := range names {
		if ino, err := inode(p); err == nil {
			f.netns[ino] = filepath.Base(p)
		}
	}
	f.mu.Unlock()
	live := f.liveFuse()
	for _, l := range loops() {
		f.mu.Lock()
		if live[l.dev] && l.seq > 0 {
			f.loops[l.name] = l.seq
		}
		f.mu.Unlock()
	}
}

// liveFuse returns the MAJ:MIN of the FUSE mounts that processes inside
// the lab's namespaces see now.
func (f *Footprint) liveFuse() map[string]bool {
	live := map[string]bool{}
	seenMnt := map[string]bool{}
	for _, p := range f.processes() {
		mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", p.pid))
		if err != nil || seenMnt[mnt] {
			continue
		}
		seenMnt[mnt] = true
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", p.pid))
		if err != nil {
			continue
		}
		for _, dev := range fuseDevices(string(b)) {
			live[dev] = true
		}
	}
	return live
}

// fuseDevices returns the MAJ:MIN of every FUSE mount in a mountinfo file.
func fuseDevices(mountinfo string) []string {
	var devs []string
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		_, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		if fstype, _, _ := strings.Cut(after, " "); fstype == "fuse" || strings.HasPrefix(fstype, "fuse.") {
			devs = append(devs, f[2])
		}
	}
	return devs
}

type proc struct {
	pid  int
	comm string
	ns   string // the netns it is in
}

// processes lists the host's processes inside one of the recorded
// namespaces.
func (f *Footprint) processes() []proc {
	f.mu.Lock()
	want := map[string]string{}
	for ino, name := range f.netns {
		want[fmt.Sprintf("net:[%d]", ino)] = name
	}
	f.mu.Unlock()
	if len(want) == 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid <= 0 {
			continue
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			continue
		}
		if name, ok := want[link]; ok {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			out = append(out, proc{pid: pid, comm: strings.TrimSpace(string(comm)), ns: name})
		}
	}
	return out
}

// loop is one attached loop device.
type loop struct {
	name, dev, file string
	seq             uint64
}

func loops() []loop {
	out, err := exec.Command("losetup", "-l", "-J", "-O", "NAME,BACK-MAJ:MIN,BACK-FILE").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return nil // no loop device at all: losetup prints nothing
	}
	var list struct {
		Devices []struct {
			Name string `json:"name"`
			Dev  string `json:"back-maj:min"`
			File string `json:"back-file"`
		} `json:"loopdevices"`
	}
	if json.Unmarshal(out, &list) != nil {
		return nil
	}
	var ls []loop
	for _, d := range list.Devices {
		l := loop{name: d.Name, dev: strings.TrimSpace(d.Dev), file: strings.TrimSpace(d.File)}
		if b, err := os.ReadFile("/sys/block/" + filepath.Base(d.Name) + "/diskseq"); err == nil {
			fmt.Sscan(string(b), &l.seq)
		}
		ls = append(ls, l)
	}
	return ls
}

// ours reports whether loop device l is the lab's: on its folder, on a
// FUSE mount live in one of its nodes (live, from liveFuse), or recorded
// on one (the same attachment: name and sequence number).
func (f *Footprint) ours(l loop, live map[string]bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if (l.dev != "" && live[l.dev]) || (f.Dir != "" && strings.HasPrefix(l.file, f.Dir+"/")) {
		return true
	}
	seq, ok := f.loops[l.name]
	return ok && seq == l.seq
}

// Leftovers lists what of the lab is still on the host: namespaces,
// processes inside them (tgtd, PostgreSQL, mirrord, nbdfuse...), mounts
// and loop devices on its folder or its nodes' FUSE mounts, the folder
// itself. Empty after a clean teardown.
func (f *Footprint) Leftovers() []string {
	var left []string
	names, _ := filepath.Glob("/var/run/netns/" + f.Prefix + "-*")
	for _, p := range names {
		left = append(left, "network namespace "+filepath.Base(p))
	}
	for _, p := range f.processes() {
		left = append(left, fmt.Sprintf("process %d (%s) in namespace %s", p.pid, p.comm, p.ns))
	}
	if f.Dir != "" {
		if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if fs := strings.Fields(line); len(fs) > 4 && strings.HasPrefix(fs[4], f.Dir) {
					left = append(left, "mount "+fs[4])
				}
			}
		}
		if _, err := os.Stat(f.Dir); err == nil {
			left = append(left, "folder "+f.Dir)
		}
	}
	live := f.liveFuse()
	for _, l := range loops() {
		if f.ours(l, live) {
			left = append(left, fmt.Sprintf("loop device %s on %s", l.name, l.file))
		}
	}
	return left
}

// Namespaces returns how many of the lab's namespaces were recorded.
func (f *Footprint) Namespaces() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.netns)
}

// inode is the inode number of path (of the namespace, for a netns file).
func inode(path string) (uint64, error) {
	var st syscall.Stat_t
	err := syscall.Stat(path, &st)
	return st.Ino, err
}
