package agents

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// mountFlag maps the generic mount options the kernel takes as flags
// (mount(8) "FILESYSTEM-INDEPENDENT MOUNT OPTIONS"); set false clears it.
func mountFlag(o string) (flag uintptr, set, ok bool) {
	switch o {
	case "ro", "rw":
		return unix.MS_RDONLY, o == "ro", true
	case "nosuid", "suid":
		return unix.MS_NOSUID, o == "nosuid", true
	case "nodev", "dev":
		return unix.MS_NODEV, o == "nodev", true
	case "noexec", "exec":
		return unix.MS_NOEXEC, o == "noexec", true
	case "sync", "async":
		return unix.MS_SYNCHRONOUS, o == "sync", true
	case "dirsync":
		return unix.MS_DIRSYNC, true, true
	case "noatime", "atime":
		return unix.MS_NOATIME, o == "noatime", true
	case "nodiratime", "diratime":
		return unix.MS_NODIRATIME, o == "nodiratime", true
	case "relatime", "norelatime":
		return unix.MS_RELATIME, o == "relatime", true
	case "strictatime":
		return unix.MS_STRICTATIME, true, true
	case "lazytime", "nolazytime":
		return unix.MS_LAZYTIME, o == "lazytime", true
	case "silent", "loud":
		return unix.MS_SILENT, o == "silent", true
	}
	return 0, false, false
}

// mountOnly says why an option of mount(8) or fstab, which the kernel
// does not know, has no meaning here ("" for other options).
func mountOnly(o string) string {
	switch o {
	case "loop":
		return "a loop device is set up outside hamirror: name the /dev/loopN (or the volume's /dev/nbdN) as device"
	case "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "owner", "group", "comment":
		return "an fstab option; the cluster does the mounting"
	case "remount", "bind", "rbind", "move":
		return "an operation, not an option of a file system resource"
	}
	if strings.HasPrefix(o, "x-") {
		return "a userspace (x-) option"
	}
	return ""
}

// parseMountOptions splits a comma-separated option string into kernel
// flags and the file-system specific rest (passed to mount(2) as data,
// checked by the file system itself, e.g. "errors=remount-ro,discard").
func parseMountOptions(s string) (flags uintptr, data string, err error) {
	var rest []string
	if s == "" {
		return 0, "", nil
	}
	for o := range strings.SplitSeq(s, ",") {
		if o == "" || strings.ContainsAny(o, " \t\n\x00") {
			return 0, "", fmt.Errorf("empty or blank option in %q", s)
		}
		if o == "defaults" {
			continue
		}
		if f, set, ok := mountFlag(o); ok {
			if set {
				flags |= f
			} else {
				flags &^= f
			}
			continue
		}
		if why := mountOnly(o); why != "" {
			return 0, "", fmt.Errorf("option %q is not a kernel mount option (%s)", o, why)
		}
		rest = append(rest, o)
	}
	return flags, strings.Join(rest, ","), nil
}
