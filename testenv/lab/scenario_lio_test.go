package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

// The LIO array's LUNs (LIOLUN order = LUN number).
const (
	lioLeg   = iota // a mirror leg beside one on tgtd (mirrord on n1, demo mode)
	lioIO           // I/O with verify, CHAP logins
	lioFence        // the fence agent's array beside a tgtd one
	lioSlow         // writes held 2 s at the array: PREEMPT AND ABORT, TPG disabled mid-write
)

const lioWriteDelay = 2 * time.Second

// The initiators with an explicit ACL on the LIO array: one-way CHAP for
// "one", mutual CHAP for "two". Any other initiator gets demo-mode access
// without authentication.
const (
	lioOne = "iqn.2026-01.org.hamirror.lab:one"
	lioTwo = "iqn.2026-01.org.hamirror.lab:two"
)

func lioACLs() []LIOACL {
	return []LIOACL{
		{Initiator: lioOne, User: "node-one", Secret: "one-secret-0123"},
		{Initiator: lioTwo, User: "node-two", Secret: "two-secret-4567", TargetUser: "lio-array", TargetSecret: "array-secret-89ab"},
	}
}

// lioConfig is how the test process's initiator named initiator logs in
// to the LIO array (its ACL's CHAP settings) over the lab namespace, with
// a short timeout so that hangs are noticed quickly.
func lioConfig(l *Lab, initiator string, p iscsi.Purpose) iscsi.Config {
	cfg := iscsi.Config{InitiatorName: initiator, Purpose: p, Dial: l.Dial,
		Timeout: 3 * time.Second, ReconnectInterval: 200 * time.Millisecond}
	for _, a := range lioACLs() {
		if a.Initiator == initiator {
			cfg.User, cfg.Secret, cfg.TargetUser, cfg.TargetSecret = a.User, a.Secret, a.TargetUser, a.TargetSecret
		}
	}
	return cfg
}

// openLIO opens url with cfg and closes it when the test ends.
func openLIO(t *testing.T, url string, cfg iscsi.Config) *iscsi.Disk {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := iscsi.OpenLeg(ctx, url, cfg)
	if err != nil {
		t.Fatalf("login to %s as %s: %v", url, cfg.InitiatorName, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// hamirror's initiator against the Linux kernel's iSCSI target (LIO),
// configured through configfs on n2, on one booted lab: CHAP logins, I/O
// with verify, the fence agent beside a tgtd array (persistent
// reservations, PREEMPT AND ABORT, a hung and a restarted target), and a
// mirror with one leg on LIO and one on tgtd. iscsi/doc.go and
// resources/fence/doc.go say where LIO and tgtd differ.
func TestLIOArray(t *testing.T) {
	l := sharedLab(t)
	n1, n2 := l.Nodes()[0], l.Nodes()[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := n2.Run(ctx, "test -d /sys/module/iscsi_target_mod && test -d /sys/module/target_core_iblock && test -d /sys/module/dm_delay")
	if err != nil {
		t.Fatal(err)
	}
	if res.Exit != 0 {
		t.Fatalf("LIO scenario: the lab kernel has no iscsi_target_mod, target_core_iblock or dm_delay module (%s)", l.Image.Kernel.Package)
	}
	start := time.Now()
	lio, err := StartLIO(ctx, n2, LIOConfig{Disk: "scratch", ACLs: lioACLs(), LUNs: []LIOLUN{
		lioLeg:   {Name: "leg", Size: 16 << 20, ThinProvisioning: true},
		lioIO:    {Name: "io", Size: 8 << 20, ThinProvisioning: true},
		lioFence: {Name: "fence", Size: 4 << 20},
		lioSlow:  {Name: "slow", Size: 4 << 20, WriteDelay: lioWriteDelay},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			res, _ := n2.Run(context.Background(), "dmesg | grep -i -e iscsi -e target -e 'CHAP' | tail -30")
			t.Logf("n2 kernel log (LIO):\n%s", res.Output())
		}
		if err := lio.Stop(context.Background()); err != nil {
			t.Errorf("removing the LIO array: %v", err)
		}
	}()
	t.Logf("LIO array configured through configfs on %s in %v", n2.Name, time.Since(start).Round(time.Millisecond))
	tgt, err := l.StartArraysOn(ctx, ArrayPortalPort(3263), 16<<20, "mt", "ft")
	if err != nil {
		if strings.Contains(err.Error(), "not installed") {
			t.Fatalf("LIO scenario (it compares with tgtd): %v", err)
		}
		t.Fatal(err)
	}
	defer tgt.Stop()
	timed := func(name string, f func(t *testing.T)) {
		t0 := time.Now()
		t.Run(name, f)
		t.Logf("%-28s %v", name, time.Since(t0).Round(10*time.Millisecond))
	}
	timed("CHAP", func(t *testing.T) { testLIOCHAP(t, l, lio) })
	timed("IOWithVerify", func(t *testing.T) { testLIOIO(t, l, lio) })
	timed("FenceBesideTgtd", func(t *testing.T) { testLIOFence(t, l, lio, tgt) })
	timed("PreemptAndAbortInFlight", func(t *testing.T) { testLIOPreemptAbortInFlight(t, l, lio) })
	timed("MirrorLegBesideTgtd", func(t *testing.T) { testLIOMirror(t, n1, lio, tgt) })
	t.Logf("LIO scenario took %v", time.Since(start).Round(10*time.Millisecond))
}

// One-way and mutual CHAP against LIO's per-ACL authentication, and every
// way a login can be wrong, each with the error an operator can act on.
func testLIOCHAP(t *testing.T, l *Lab, lio *LIO) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := lio.URL(lioIO)
	for _, c := range []struct {
		name   string
		cfg    func(*iscsi.Config)
		want   error
		saying string
	}{
		{"one-way CHAP", func(*iscsi.Config) {}, nil, ""},
		{"mutual CHAP", func(c *iscsi.Config) { *c = lioConfig(l, lioTwo, 0) }, nil, ""},
		{"demo mode, no ACL, no CHAP", func(c *iscsi.Config) {
			c.InitiatorName, c.User, c.Secret = "iqn.2026-01.org.hamirror.lab:demo", "", ""
		}, nil, ""},
		{"no CHAP where the ACL requires it", func(c *iscsi.Config) { c.User, c.Secret = "", "" }, iscsi.ErrAuth, "requires CHAP"},
		{"wrong secret", func(c *iscsi.Config) { c.Secret = "not-the-secret" }, iscsi.ErrAuth, "rejected our CHAP credentials"},
		{"wrong user", func(c *iscsi.Config) { c.User = "node-two" }, iscsi.ErrAuth, "rejected our CHAP credentials"},
		{"mutual: the array proves the wrong secret", func(c *iscsi.Config) {
			*c = lioConfig(l, lioTwo, 0)
			c.TargetSecret = "what-we-expect-0"
		}, iscsi.ErrAuth, "target's CHAP response is wrong"},
		{"mutual: the array authenticates under another name", func(c *iscsi.Config) {
			*c = lioConfig(l, lioTwo, 0)
			c.TargetUser = "another-array"
		}, iscsi.ErrAuth, "expected \"another-array\""},
	} {
		cfg := lioConfig(l, lioOne, 0)
		c.cfg(&cfg)
		d, err := iscsi.OpenLeg(ctx, url, cfg)
		if err == nil {
			err = d.WriteAt(make([]byte, 4096), 0, true)
			d.Close()
		}
		switch {
		case c.want == nil && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != nil && (!errors.Is(err, c.want) || !strings.Contains(err.Error(), c.saying)):
			t.Errorf("%s: %v; want %v saying %q", c.name, err, c.want, c.saying)
		}
	}
}

// Writes of every size class the negotiation makes different (immediate
// data, unsolicited and solicited bursts: LIO answers InitialR2T=Yes,
// FirstBurstLength 64 KiB, MaxBurstLength 256 KiB), with and without
// CRC32C digests, many commands beyond LIO's CmdSN window, and zeroing on
// a thin LUN; each read back through the initiator and from the array's
// disk on the host.
func testLIOIO(t *testing.T, l *Lab, lio *LIO) {
	rnd := rand.New(rand.NewPCG(13, 13))
	for _, digests := range []bool{false, true} {
		cfg := lioConfig(l, lioOne, iscsi.PurposeTool)
		cfg.HeaderDigest, cfg.DataDigest = digests, digests
		d := openLIO(t, lio.URL(lioIO), cfg)
		if p := d.Params(); p.HeaderDigest != digests || p.DataDigest != digests {
			t.Fatalf("digests %v: negotiated %+v", digests, p)
		}
		if inq := d.Info(); inq.Serial != "io" || len(inq.DeviceIDs) == 0 || d.Limits().MaxTransferBlocks == 0 {
			t.Errorf("identification of the LIO LUN: %+v, limits %+v; want serial io, device IDs and Block Limits", inq, d.Limits())
		}
		off := int64(0)
		for _, size := range []int{512, 4096, 64 << 10, 64<<10 + 512, 256 << 10, 256<<10 + 4096, 1 << 20, 3<<20 + 512} {
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(rnd.Uint32())
			}
			if err := d.WriteAt(data, off, size%1024 == 0); err != nil {
				t.Fatalf("digests %v: write of %d bytes: %v", digests, size, err)
			}
			back := make([]byte, size)
			if err := d.ReadAt(back, off); err != nil {
				t.Fatalf("digests %v: read of %d bytes: %v", digests, size, err)
			}
			if !bytes.Equal(back, data) {
				t.Fatalf("digests %v: %d bytes at %d read back differ", digests, size, off)
			}
			stored, err := lio.ReadBacking(lioIO, off, size)
			if err != nil || !bytes.Equal(stored, data) {
				t.Fatalf("digests %v: the array's disk does not hold the %d bytes written at %d (%v)", digests, size, off, err)
			}
			off += int64(size+4095) &^ 4095
		}
		// The next session has the same ISID (same initiator, purpose and
		// LUN): LIO would reinstate one with the other.
		d.Close()
	}
	// 300 writes at once (LIO grants a CmdSN window of 64), half with FUA.
	d := openLIO(t, lio.URL(lioIO), lioConfig(l, lioOne, iscsi.PurposeTool))
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), int64(i)*4096, i%2 == 0); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent write: %v", err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	all := make([]byte, 300*4096)
	if err := d.ReadAt(all, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if all[i*4096] != byte(i) || all[i*4096+4095] != byte(i) {
			t.Fatalf("block %d of the concurrent writes holds %#x", i, all[i*4096])
		}
	}
	// Zeroing on a thin LIO LUN whose unmapped blocks do not read as zeros
	// (LBPRZ 0): WRITE SAME must not ask LIO to unmap (it would discard
	// and leave the old data; iscsi.Disk.writeSameUnmaps).
	if c, lim := d.Capacity(), d.Limits(); !c.LBPME || c.LBPRZ || !lim.WriteSameUnmap {
		t.Fatalf("thin LUN: capacity %+v limits %+v; want LBPME, not LBPRZ, LBPWS (emulate_tpws)", c, lim)
	}
	for _, unmap := range []bool{true, false} {
		if err := d.WriteAt(bytes.Repeat([]byte{0x5a}, 1<<20), 0, true); err != nil {
			t.Fatal(err)
		}
		if err := d.Zero(4096, 1<<20-8192, unmap); err != nil {
			t.Fatalf("zero (unmap %v): %v", unmap, err)
		}
		back := make([]byte, 1<<20)
		if err := d.ReadAt(back, 0); err != nil {
			t.Fatal(err)
		}
		if back[4095] != 0x5a || back[1<<20-4096] != 0x5a || bytes.Count(back, []byte{0}) != 1<<20-8192 {
			t.Fatalf("zero (unmap %v) of [4096, 1 MiB-4096): %d zero bytes, edges %#x %#x; want exactly the range zeroed",
				unmap, bytes.Count(back, []byte{0}), back[4095], back[1<<20-4096])
		}
	}
}

// A mirror with one leg on LIO (n2) and one on tgtd (host), served by
// mirrord on n1 as /dev/nbd0: a pattern written through the volume reads
// back; a discard (NBD TRIM, which zeroes both legs) leaves both legs
// identical; verify finds no difference; both arrays' disks hold the same
// data.
func testLIOMirror(t *testing.T, n *Node, lio *LIO, tgt *Arrays) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	legA, legB := lio.URL(lioLeg), tgt.URL("mt")
	if _, ok, why := HamirrorIfAvailable(ctx, n, legA, legB); !ok {
		t.Fatalf("LIO mirror leg: %s", why)
	}
	const ctl = "mirrorctl --control unix:/run/c.sock "
	defer func() {
		if t.Failed() {
			res, _ := n.Run(context.Background(), ctl+"status; tail -20 /run/mirrord.log")
			t.Logf("status and mirrord log on %s:\n%s", n.Name, res.Output())
		}
		n.Run(context.Background(), MirrordStop)
	}()
	run(t, n, fmt.Sprintf("mirrorctl create --force --chunk 64K %s %s", legA, legB))
	run(t, n, "rm -f /run/mirrord.log; "+MirrordStartFlags("--control unix:/run/c.sock", legA, legB))
	st := volumeStatus(t, n, ctl)
	if st.State != "clean" {
		t.Fatalf("volume over LIO and tgtd: state %s, legs %+v", st.State, st.Legs)
	}
	// 8 MiB of random data, read back past the page cache; then 1 MiB of
	// it discarded, which must read as zeros.
	run(t, n, `set -e
dd if=/dev/urandom of=/run/pat bs=64k count=128 2>/dev/null
dd if=/run/pat of=/dev/nbd0 bs=64k oflag=direct 2>/dev/null
sync; echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/nbd0 bs=64k count=128 iflag=direct 2>/dev/null | cmp - /run/pat
blkdiscard -o 2097152 -l 1048576 /dev/nbd0
dd if=/dev/zero of=/run/pat bs=64k seek=32 count=16 conv=notrunc 2>/dev/null
echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/nbd0 bs=64k count=128 iflag=direct 2>/dev/null | cmp - /run/pat`)
	if out := run(t, n, ctl+"verify --wait"); !strings.Contains(out, " 0 mismatching chunks") {
		t.Errorf("verify of the legs on LIO and tgtd:\n%s", out)
	}
	run(t, n, MirrordStop)
	path, off := lio.Backing(lioLeg)
	if err := sameRangeAt(path, off, tgt.Backing("mt"), 0, st.SizeBytes); err != nil {
		t.Errorf("the data areas on the LIO and tgtd arrays' disks: %v", err)
	}
}
