package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// Mirror is one way to mirror two disks inside a VM, as shell scripts the
// scenarios and the lab benchmark run with Node.Run: Setup leaves the
// mirrored block device at Device; Teardown stops it (the legs keep the
// data). The scripts need the tools the lab image carries.
type Mirror struct {
	Name     string
	Device   string
	Setup    string
	Teardown string
}

// MDRAID1 is Linux md RAID1 over legs a and b (metadata 1.2, no initial
// resync: the legs start equal or are about to be overwritten), without a
// write-intent bitmap.
func MDRAID1(a, b string) Mirror { return mdRAID1("md-raid1", "none", a, b) }

// MDRAID1Bitmap is MDRAID1 with an internal write-intent bitmap, the md
// setup closest to hamirror's (which keeps a dirty-chunk bitmap on both legs).
func MDRAID1Bitmap(a, b string) Mirror { return mdRAID1("md-raid1+bitmap", "internal", a, b) }

func mdRAID1(name, bitmap, a, b string) Mirror {
	return Mirror{
		Name:   name,
		Device: "/dev/md0",
		Setup: fmt.Sprintf("mdadm --create /dev/md0 --run --quiet --level=1 --raid-devices=2 "+
			"--metadata=1.2 --assume-clean --bitmap=%s %s %s", bitmap, a, b),
		Teardown: fmt.Sprintf("mdadm --stop /dev/md0 && mdadm --zero-superblock %s %s", a, b),
	}
}

// DMMirror is device-mapper's mirror target over legs a and b with an
// in-memory region log (core), without initial resync.
func DMMirror(a, b string) Mirror {
	return Mirror{
		Name:   "dm-mirror",
		Device: "/dev/mapper/dmm",
		Setup: fmt.Sprintf(`s=$(blockdev --getsz %s) &&
dmsetup create dmm --noudevsync --table "0 $s mirror core 2 1024 nosync 2 %s 0 %s 0 1 handle_errors" &&
dmsetup mknodes dmm`, a, a, b),
		Teardown: "dmsetup remove --noudevsync dmm",
	}
}

// Plain is one leg alone: the baseline the mirrors are measured against.
func Plain(a string) Mirror {
	return Mirror{Name: "single-disk", Device: a, Setup: "true", Teardown: "true"}
}

// WriteStats is what `labagent write` measured.
type WriteStats struct {
	Bytes   float64 `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Ops     float64 `json:"ops"`
}

// MBps is the throughput in MB/s (10^6 bytes).
func (w WriteStats) MBps() float64 { return w.Bytes / w.Seconds / 1e6 }

// IOPS is operations per second.
func (w WriteStats) IOPS() float64 { return w.Ops / w.Seconds }

// WriteLoad runs labagent write on device in the node: sequential with
// block size bs, or random aligned writes of bs; count blocks below span.
func WriteLoad(ctx context.Context, n *Node, device string, bs, span, count int64, random bool) (WriteStats, error) {
	args := []string{"labagent", "write", "-path", device, "-bs", fmt.Sprint(bs), "-size", fmt.Sprint(span),
		"-count", fmt.Sprint(count)}
	if random {
		args = append(args, "-random")
	}
	res, err := n.Exec(ctx, args...)
	if err != nil {
		return WriteStats{}, err
	}
	if err := res.Err(); err != nil {
		return WriteStats{}, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	var w WriteStats
	if err := json.Unmarshal([]byte(res.Stdout), &w); err != nil {
		return w, fmt.Errorf("labagent write printed %q: %w", res.Stdout, err)
	}
	return w, nil
}

// FillScript makes an ext4 filesystem on dev, writes files of random data
// and keeps their SHA-256 sums in /run/sums-TAG for VerifyScript.
func FillScript(dev, tag string) string {
	return fmt.Sprintf(`set -e
mkfs.ext4 -q -F %[1]s
mkdir -p /mnt/%[2]s
mount -t ext4 %[1]s /mnt/%[2]s
for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/mnt/%[2]s/f$i bs=64k count=$((i*3)) 2>/dev/null; done
mkdir -p /mnt/%[2]s/dir && cp /mnt/%[2]s/f2 /mnt/%[2]s/dir/copy
(cd /mnt/%[2]s && sha256sum f* dir/copy > /run/sums-%[2]s)
umount /mnt/%[2]s`, dev, tag)
}

// VerifyScript mounts dev read-only and checks the files FillScript wrote
// (after e2fsck finds the filesystem clean).
func VerifyScript(dev, tag string) string {
	return fmt.Sprintf(`set -e
e2fsck -fn %[1]s >/dev/null
mkdir -p /mnt/%[2]s
mount -t ext4 -o ro %[1]s /mnt/%[2]s
cd /mnt/%[2]s && sha256sum -c /run/sums-%[2]s; rc=$?
cd / && umount /mnt/%[2]s
exit $rc`, dev, tag)
}
