package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
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
	t.Parallel() // on n1, beside the peer-mirror scenario on n2
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
		// QEMU has written what the guest flushed to the backing files:
		// compare them on the host (hashing in the TCG guest is slow).
		if err := sameRange(n.DiskPath("leg0"), n.DiskPath("leg1"), size); err != nil {
			t.Error(err)
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
		// Write and sync through the new mirrord, then read everything
		// back from the device (not the page cache).
		run(t, n, `set -e
dd if=/dev/urandom of=/mnt/hm/after bs=64k count=8 2>/dev/null
sync
cd /mnt/hm && sha256sum after >>/run/sums-hm
echo 3 >/proc/sys/vm/drop_caches
sha256sum -c /run/sums-hm`)
		run(t, n, "umount /mnt/hm")
		run(t, n, VerifyScript("/dev/nbd0", "hm"))
		if out := run(t, n, "dmesg | grep -i -e 'I/O error' -e 'EXT4-fs error' -e 'Buffer I/O' || true"); out != "" {
			t.Errorf("the kernel saw I/O errors across the mirrord restart:\n%s", out)
		}
	})
}

// sameRange reports where files a and b first differ within their first
// size bytes (a decimal string), or nil if they are equal there.
func sameRange(a, b, size string) error {
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil {
		return fmt.Errorf("volume size %q: %w", size, err)
	}
	return sameRangeAt(a, 0, b, 0, n)
}

// sameRangeAt compares n bytes of file a from offA with file b from offB
// (a LUN that starts inside a VM's disk image, lio.go).
func sameRangeAt(a string, offA int64, b string, offB int64, n int64) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < n; off += int64(len(ba)) {
		k := int(min(int64(len(ba)), n-off))
		if _, err := io.ReadFull(io.NewSectionReader(fa, offA+off, int64(k)), ba[:k]); err != nil {
			return fmt.Errorf("%s at %d: %w", a, offA+off, err)
		}
		if _, err := io.ReadFull(io.NewSectionReader(fb, offB+off, int64(k)), bb[:k]); err != nil {
			return fmt.Errorf("%s at %d: %w", b, offB+off, err)
		}
		if !bytes.Equal(ba[:k], bb[:k]) {
			for i := range k {
				if ba[i] != bb[i] {
					return fmt.Errorf("legs differ at byte %d of the %d byte data area", off+int64(i), n)
				}
			}
		}
	}
	return nil
}

func TestSameRangeFindsFirstDifference(t *testing.T) {
	dir := t.TempDir()
	a, b := dir+"/a", dir+"/b"
	data := bytes.Repeat([]byte{7}, 3<<20)
	os.WriteFile(a, data, 0o600)
	data[2<<20+5] = 8
	os.WriteFile(b, append(data, 1, 2, 3), 0o600)
	if err := sameRange(a, b, fmt.Sprint(2<<20)); err != nil {
		t.Errorf("equal prefix reported different: %v", err)
	}
	err := sameRange(a, b, fmt.Sprint(3<<20))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint("byte ", 2<<20+5)) {
		t.Errorf("difference at %d: %v", 2<<20+5, err)
	}
	if err := sameRange(a, b, fmt.Sprint(4<<20)); err == nil {
		t.Error("range beyond the files reported equal")
	}
}
