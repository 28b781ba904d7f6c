package agents

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// mountEntry is one line of /proc/PID/mountinfo (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	id parent major:minor root mount-point mount-options optional... - fstype source super-options
type mountEntry struct {
	id, parent   int
	major, minor uint32
	root         string
	mountPoint   string
	options      string // per-mount options (rw/ro, nosuid, ...)
	fstype       string
	source       string
	superOptions string // the file system's options (ro after errors=remount-ro)
}

// readOnly reports whether the mount or its file system is read-only.
func (m mountEntry) readOnly() bool {
	return hasOption(m.options, "ro") || hasOption(m.superOptions, "ro")
}

func hasOption(opts, o string) bool {
	for x := range strings.SplitSeq(opts, ",") {
		if x == o {
			return true
		}
	}
	return false
}

// maxMountinfo bounds what is read of a mountinfo file (a host with
// thousands of mounts stays well below).
const maxMountinfo = 16 << 20

// readMountinfo reads and parses a mountinfo file.
func readMountinfo(path string) ([]mountEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseMountinfo(b)
}

// parseMountinfo parses a whole mountinfo file, strictly: a line that
// does not have the documented shape is an error naming the line.
func parseMountinfo(b []byte) ([]mountEntry, error) {
	if len(b) > maxMountinfo {
		return nil, fmt.Errorf("mountinfo is %d bytes, more than %d", len(b), maxMountinfo)
	}
	var out []mountEntry
	n := 0
	for line := range strings.Lines(string(b)) {
		n++
		line = strings.TrimRight(line, "\n")
		if line == "" {
			continue
		}
		e, err := parseMountLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, e)
	}
	return out, nil
}

func parseMountLine(line string) (mountEntry, error) {
	var e mountEntry
	f := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 10 || sep < 0 || len(f) != sep+4 {
		return e, fmt.Errorf("%d fields, not id parent dev root point options ... - type source options", len(f))
	}
	var err error
	if e.id, err = strconv.Atoi(f[0]); err != nil || e.id < 0 {
		return e, fmt.Errorf("bad mount id %q", f[0])
	}
	if e.parent, err = strconv.Atoi(f[1]); err != nil || e.parent < 0 {
		return e, fmt.Errorf("bad parent id %q", f[1])
	}
	maj, mnr, ok := strings.Cut(f[2], ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(mnr, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return e, fmt.Errorf("bad device number %q", f[2])
	}
	e.major, e.minor = uint32(ma), uint32(mi)
	if e.root, err = unescapeMount(f[3]); err != nil {
		return e, err
	}
	if e.mountPoint, err = unescapeMount(f[4]); err != nil {
		return e, err
	}
	if !strings.HasPrefix(e.mountPoint, "/") {
		return e, fmt.Errorf("mount point %q is not absolute", e.mountPoint)
	}
	e.options = f[5]
	e.fstype = f[sep+1]
	if e.source, err = unescapeMount(f[sep+2]); err != nil {
		return e, err
	}
	e.superOptions = f[sep+3]
	return e, nil
}

// unescapeMount undoes the kernel's octal escapes (\040 space, \011 tab,
// \012 newline, \134 backslash) in a mountinfo path.
func unescapeMount(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape %q in %q", s[i:i+4], s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// mountAt returns the mount that is visible at dir: the last one
// mounted there (mounts stack).
func mountAt(entries []mountEntry, dir string) (mountEntry, bool) {
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].mountPoint == dir {
			return entries[i], true
		}
	}
	return mountEntry{}, false
}

// mountsOf returns the mount points of a device.
func mountsOf(entries []mountEntry, major, minor uint32) []string {
	var out []string
	for _, e := range entries {
		if e.major == major && e.minor == minor {
			out = append(out, e.mountPoint)
		}
	}
	return out
}

// mountsBelow returns the mount points strictly below dir.
func mountsBelow(entries []mountEntry, dir string) []string {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.mountPoint, prefix) {
			out = append(out, e.mountPoint)
		}
	}
	return out
}
