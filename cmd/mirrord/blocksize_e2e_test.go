package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawIOScript sends 512-byte READ, WRITE and WRITE_ZEROES with libnbd's
// client-side alignment check off, so the server sees them as a buggy or
// hostile client would send them, and prints each result.
const rawIOScript = `import nbd, sys
h = nbd.NBD()
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)
h.connect_uri(sys.argv[1])
print("minimum", h.get_block_size(nbd.SIZE_MINIMUM))
for what, f in (("read", lambda: h.pread(512, 512)), ("write", lambda: h.pwrite(b"x" * 512, 4096 + 512)), ("zero", lambda: h.zero(512, 8192))):
    try:
        f()
        print(what, "ok")
    except nbd.Error as e:
        print(what, "errno", e.errno)
`

// libnbdPython is Debian's python3, which has python3-libnbd (a python3
// earlier on PATH may not); the test is skipped loudly without it.
func libnbdPython(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import nbd").Run(); err != nil {
		t.Skipf("SKIPPED LOUDLY: %s cannot import nbd: install python3-libnbd (make deps)", py)
	}
	return py
}

// rawNBD runs rawIOScript against uri.
func rawNBD(t *testing.T, dir, uri string) string {
	t.Helper()
	py := libnbdPython(t)
	script := filepath.Join(dir, "rawio.py")
	if err := os.WriteFile(script, []byte(rawIOScript), 0o600); err != nil {
		t.Fatal(err)
	}
	return runTool(t, dir, py, script, uri)
}

// Finding 6 of issue 10: a volume with a 4096-byte-sector leg (a real
// tgtd LUN made with --blocksize 4096) and a 512-byte one exports 4096
// as its minimum block size; a client that honours it (qemu) works with
// 512-byte I/O by read-modify-write, and one that does not gets EINVAL
// from mirrord: no leg ever sees the request, none fails.
func TestISCSI4KSectorLeg(t *testing.T) {
	requireTools(t, "nbdinfo", "qemu-io")
	scratch := scratchDir(t)
	arr := startPlainArray(t, scratch, "mixed", "iqn.2026-01.org.hamirror.test:bs",
		lunSpec{size: 64 << 20, blockSize: 4096}, lunSpec{size: 64 << 20}, lunSpec{size: 64 << 20, blockSize: 4096}, lunSpec{size: 64 << 20})
	l := newLabNoLegs(t)
	l.legs = [2]string{arr.urls[0], arr.urls[1]}
	l.mustCtl("create", l.legs[0], l.legs[1])
	l.start(l.legs, "--io-timeout", ioTimeout.String())

	var info struct {
		Exports []struct {
			MinBlock int64 `json:"block_size_minimum"`
		} `json:"exports"`
	}
	out := runTool(t, l.dir, "nbdinfo", "--json", l.uri())
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	if got := info.Exports[0].MinBlock; got != 4096 {
		t.Fatalf("minimum block size %d over a 4096-byte-sector LUN, want 4096", got)
	}
	clean := func(after string) {
		t.Helper()
		if st := l.status(); st.State != "clean" || st.Legs[0].State != "in_sync" || st.Legs[1].State != "in_sync" {
			t.Fatalf("after %s: %+v\n%s", after, st, l.stderr)
		}
	}
	// qemu aligns 512-byte requests to the advertised 4096 itself.
	out = runTool(t, l.dir, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 512 512", "-c", "read -P 0x5a 512 512", "-c", "read -P 0 0 512", l.uri())
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io 512-byte I/O:\n%s", out)
	}
	clean("qemu-io 512-byte I/O")
	// A client that ignores it gets EINVAL.
	out = rawNBD(t, l.dir, l.uri())
	for _, want := range []string{"minimum 4096", "read errno EINVAL", "write errno EINVAL", "zero errno EINVAL"} {
		if !strings.Contains(out, want) {
			t.Fatalf("raw 512-byte NBD I/O: want %q in\n%s", want, out)
		}
	}
	clean("raw 512-byte NBD I/O")
	l.stop()

	// A 512-byte volume refuses a 4096-byte replacement leg, saying how;
	// restarted with --block-size 4096 it takes it (a blank LUN: full copy).
	l2 := newLabNoLegs(t)
	l2.legs = [2]string{arr.urls[1], arr.urls[3]}
	l2.mustCtl("create", "--force", l2.legs[0], l2.legs[1])
	l2.start(l2.legs, "--io-timeout", ioTimeout.String())
	l2.mustCtl("leg", "fail", "1")
	if out, err := l2.ctlRun("leg", "add", "1", "--path", arr.urls[2]); err == nil || !strings.Contains(out, "--block-size 4096") {
		t.Fatalf("adding a 4096-byte leg to a 512-byte volume: %v\n%s", err, out)
	}
	l2.stop()
	l2.start(l2.legs, "--io-timeout", ioTimeout.String(), "--block-size", "4096")
	l2.waitState("clean", 30*time.Second)
	l2.mustCtl("leg", "fail", "1")
	l2.mustCtl("leg", "add", "1", "--path", arr.urls[2])
	if st, _ := l2.waitState("clean", 30*time.Second); st.Legs[1].Path != arr.urls[2] {
		t.Fatalf("after replacing leg 1 by the 4096-byte LUN: %+v", st)
	}
	l2.stop()
}
