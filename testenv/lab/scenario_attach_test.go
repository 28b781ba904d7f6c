package lab

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Kernel attach: mirrord serves a mirror of two virtio disks on /dev/nbd0
// in a real kernel; ext4 on it survives stop/start, both legs hold the
// same image, and a mirrord killed while the filesystem is mounted is
// replaced by a new one (netlink RECONFIGURE) without losing it.
func TestKernelAttachKeepsFilesystem(t *testing.T) {
	l := sharedLab(t)
	n := l.Nodes()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, ok, why := HamirrorIfAvailable(ctx, n, "/dev/vdb", "/dev/vdc"); !ok {
		t.Skipf("SKIPPING KERNEL ATTACH SCENARIO: %s", why)
	}
	defer func() {
		if t.Failed() {
			res, _ := n.Run(context.Background(), "tail -40 /run/mirrord.log; dmesg | tail -20")
			t.Logf("mirrord log and dmesg on %s:\n%s", n.Name, res.Output())
		}
		n.Run(context.Background(), "umount /mnt/hm 2>/dev/null; "+MirrordStop)
	}()

	run(t, n, "mirrorctl create /dev/vdb /dev/vdc")
	run(t, n, MirrordStart("/dev/vdb", "/dev/vdc"))
	size := strings.TrimSpace(run(t, n, "blockdev --getsize64 /dev/nbd0"))
	if size == "0" || size == "" {
		t.Fatalf("/dev/nbd0 size %q", size)
	}
	run(t, n, FillScript("/dev/nbd0", "hm"))

	t.Run("legs equal after stop", func(t *testing.T) {
		run(t, n, MirrordStop)
		sums := run(t, n, "for l in /dev/vdb /dev/vdc; do head -c "+size+" $l | sha256sum | cut -d' ' -f1; done")
		f := strings.Fields(sums)
		if len(f) != 2 || f[0] != f[1] {
			t.Errorf("the legs' data areas (%s bytes) differ: %q", size, sums)
		}
	})

	t.Run("restart and remount", func(t *testing.T) {
		run(t, n, MirrordStart("/dev/vdb", "/dev/vdc"))
		run(t, n, VerifyScript("/dev/nbd0", "hm"))
	})

	t.Run("mirrord killed while mounted, new one reclaims", func(t *testing.T) {
		run(t, n, "mount -t ext4 /dev/nbd0 /mnt/hm && sha256sum /mnt/hm/f3")
		run(t, n, "kill -KILL $(pidof mirrord); sleep 1")
		run(t, n, MirrordStart("/dev/vdb", "/dev/vdc"))
		run(t, n, `set -e
dd if=/dev/urandom of=/mnt/hm/after bs=64k count=8 2>/dev/null
sync
cd /mnt/hm && sha256sum -c /run/sums-hm && sha256sum after >>/run/sums-hm`)
		run(t, n, "umount /mnt/hm")
		run(t, n, VerifyScript("/dev/nbd0", "hm"))
	})
}
