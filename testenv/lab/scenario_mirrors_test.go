package lab

import (
	"context"
	"testing"
	"time"
)

// md RAID1 and dm-mirror over the same two virtio disks: a filesystem
// written through each mirror is complete on each leg alone afterwards.
// These are the peers hamirror is measured beside (make bench lab).
func TestPeerMirrorsKeepBothLegsWhole(t *testing.T) {
	l := sharedLab(t)
	t.Parallel() // on n2, beside the kernel attach scenario on n1
	n := l.Nodes()[1]
	t.Run("md-raid1", func(t *testing.T) {
		m := MDRAID1("/dev/vdb", "/dev/vdc")
		run(t, n, m.Setup)
		run(t, n, FillScript(m.Device, "md"))
		run(t, n, "mdadm --stop /dev/md0")
		for _, leg := range []string{"/dev/vdb", "/dev/vdc"} {
			run(t, n, "mdadm --assemble --run --quiet /dev/md0 "+leg)
			run(t, n, VerifyScript("/dev/md0", "md"))
			run(t, n, "mdadm --stop /dev/md0")
		}
		run(t, n, "mdadm --zero-superblock /dev/vdb /dev/vdc")
	})
	t.Run("dm-mirror", func(t *testing.T) {
		m := DMMirror("/dev/vdb", "/dev/vdc")
		run(t, n, m.Setup)
		run(t, n, FillScript(m.Device, "dm"))
		run(t, n, m.Teardown)
		for _, leg := range []string{"/dev/vdb", "/dev/vdc"} {
			run(t, n, VerifyScript(leg, "dm"))
		}
	})
	t.Run("write-load", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		w, err := WriteLoad(ctx, n, "/dev/vdb", 4096, 8<<20, 64, true)
		if err != nil {
			t.Fatal(err)
		}
		if w.Ops != 64 || w.Bytes != 64*4096 || w.Seconds <= 0 {
			t.Errorf("write load stats %+v", w)
		}
	})
}
