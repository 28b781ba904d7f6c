package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// zeroScript sends one NBD_CMD_WRITE_ZEROES per argument OFF:LEN:MODE
// (MODE hole lets the server deallocate, nohole sets NBD_CMD_FLAG_NO_HOLE)
// and prints how long each took; a failed request ends it with an error.
const zeroScript = `import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for spec in sys.argv[2:]:
    off, n, mode = spec.split(":")
    t0 = time.monotonic()
    h.zero(int(n), int(off), 0 if mode == "hole" else nbd.CMD_FLAG_NO_HOLE)
    print("zero", spec, "ok in %.2fs" % (time.monotonic() - t0))
`

func nbdZero(t *testing.T, dir, uri string, specs ...string) string {
	t.Helper()
	py := libnbdPython(t)
	script := filepath.Join(dir, "zero.py")
	if err := os.WriteFile(script, []byte(zeroScript), 0o600); err != nil {
		t.Fatal(err)
	}
	return runTool(t, dir, py, append([]string{script, uri}, specs...)...)
}

// largeZeroes runs issue 10 finding 4's scenario on a running volume of
// at least 4 GiB + 16 MiB: marks written around the ranges, a 512 MiB
// WRITE_ZEROES that must write zeros (NO_HOLE), then a 4 GiB - 4 KiB one
// the legs may deallocate. Both succeed, the marks outside survive, the
// ranges read as zeros, and no leg failed.
func (l *lab) largeZeroes(t *testing.T) {
	t.Helper()
	const z1, n1 = 4 << 20, 512 << 20
	io := func(cmds ...string) {
		t.Helper()
		args := []string{"-f", "raw"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		out := runTool(t, l.dir, "qemu-io", append(args, l.uri())...)
		if strings.Contains(out, "failed") {
			t.Fatalf("qemu-io %v:\n%s", cmds, out)
		}
	}
	io(fmt.Sprintf("write -P 0xab 0 %d", z1), fmt.Sprintf("write -P 0xcd %d 1M", z1+n1/2), fmt.Sprintf("write -P 0xef %d 1M", z1+n1))
	t.Log(nbdZero(t, l.dir, l.uri(), fmt.Sprintf("%d:%d:nohole", z1, n1)))
	io(fmt.Sprintf("read -P 0xab 0 %d", z1), fmt.Sprintf("read -P 0 %d %d", z1, n1), fmt.Sprintf("read -P 0xef %d 1M", z1+n1))
	st := l.status()
	if st.State != "clean" || st.Legs[0].State != "in_sync" || st.Legs[1].State != "in_sync" {
		t.Fatalf("after a 512 MiB WRITE_ZEROES on healthy legs: %+v\n%s", st, l.stderr)
	}
	const n2 = 4<<30 - 4096
	io(fmt.Sprintf("write -P 0x12 %d 1M", n2-1<<20), fmt.Sprintf("write -P 0x34 %d 4096", n2))
	t.Log(nbdZero(t, l.dir, l.uri(), fmt.Sprintf("0:%d:hole", n2)))
	io("read -P 0 0 8M", fmt.Sprintf("read -P 0 %d 1M", z1+n1), fmt.Sprintf("read -P 0 %d 1M", n2-1<<20), fmt.Sprintf("read -P 0x34 %d 4096", n2))
	if st := l.status(); st.State != "clean" {
		t.Fatalf("after a 4 GiB trim on healthy legs: %+v\n%s", st, l.stderr)
	}
	if strings.Contains(l.stderr.String(), "leg failed") {
		t.Fatalf("a leg failed:\n%s", l.stderr)
	}
}

// Large zeroes over two file legs (sparse files, fallocate).
func TestNBDLargeZeroesFileLegs(t *testing.T) {
	requireTools(t, "qemu-io")
	l := newLab(t, 4<<30+64<<20)
	l.mustCtl("create", l.legs[0], l.legs[1])
	l.start(l.legs, "--io-timeout", ioTimeout.String())
	l.largeZeroes(t)
	l.stop()
}

// Large zeroes over two real tgtd arrays (thin LUNs: UNMAP for a zero that
// may deallocate, writes of zeros for NO_HOLE, which do not zero 512 MiB
// within the 2 s I/O timeout: in one leg call a healthy leg failed).
// No reservation here: --zero-by-writing never lets tgtd UNMAP (auto
// writes zeros on tgtd, whose UNMAP ignores reservations).
func TestISCSILargeZeroes(t *testing.T) {
	requireTools(t, "qemu-io")
	// The LUNs live on the disk, not tmpfs: an array that writes zeros to
	// real media (tmpfs zeroes 512 MiB in about the I/O timeout).
	scratch := t.TempDir()
	var legs [2]string
	for i, name := range []string{"za", "zb"} {
		a := startPlainArray(t, scratch, name, "iqn.2026-01.org.hamirror.test:"+name, lunSpec{size: 4<<30 + 64<<20, params: "thin_provisioning=1"})
		legs[i] = a.urls[0]
	}
	l := newLabNoLegs(t)
	l.legs = legs
	l.mustCtl("create", l.legs[0], l.legs[1])
	l.start(l.legs, "--io-timeout", ioTimeout.String(), "--zero-by-writing", "never")
	l.largeZeroes(t)
	l.stop()
}
