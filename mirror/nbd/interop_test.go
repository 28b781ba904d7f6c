package nbd

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Interop tests: real NBD clients (libnbd's nbdinfo and nbdcopy, qemu-img,
// fio's nbd engine) against the server with an in-memory backend.

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("SKIPPED LOUDLY: %s is not installed: run make deps", name)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = t.TempDir() // fio leaves verify state files in its directory
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func uri(sock string) string { return "nbd+unix:///?socket=" + sock }

func TestNbdinfoSeesGeometryAndFlags(t *testing.T) {
	requireTool(t, "nbdinfo")
	for _, ro := range []bool{false, true} {
		_, sock := startServer(t, newMem(3<<20, 512), Options{ExportName: "vol0", Description: "hamirror test", ReadOnly: ro})
		var info struct {
			Protocol   string `json:"protocol"`
			Structured bool   `json:"structured"`
			Exports    []struct {
				Name        string `json:"export-name"`
				Description string `json:"description"`
				Size        int64  `json:"export-size"`
				MinBlock    int    `json:"block_size_minimum"`
				PrefBlock   int    `json:"block_size_preferred"`
				MaxBlock    int    `json:"block_size_maximum"`
				ReadOnly    bool   `json:"is_read_only"`
				Flush       bool   `json:"can_flush"`
				FUA         bool   `json:"can_fua"`
				MultiConn   bool   `json:"can_multi_conn"`
				Trim        bool   `json:"can_trim"`
				Zero        bool   `json:"can_zero"`
				DF          bool   `json:"can_df"`
			} `json:"exports"`
		}
		out := run(t, "nbdinfo", "--json", "nbd+unix:///vol0?socket="+sock)
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("nbdinfo output: %v\n%s", err, out)
		}
		if info.Protocol != "newstyle-fixed" || !info.Structured || len(info.Exports) != 1 {
			t.Fatalf("nbdinfo: %s", out)
		}
		e := info.Exports[0]
		if e.Name != "vol0" || e.Description != "hamirror test" || e.Size != 3<<20 ||
			e.MinBlock != 512 || e.PrefBlock != 4096 || e.MaxBlock != 32<<20 ||
			e.ReadOnly != ro || !e.Flush || !e.FUA || !e.MultiConn || !e.Trim || !e.Zero || !e.DF {
			t.Errorf("read-only=%v: nbdinfo sees %+v", ro, e)
		}
		// nbdinfo --list uses NBD_OPT_LIST.
		if out := run(t, "nbdinfo", "--list", uri(sock)); !strings.Contains(out, "vol0") {
			t.Errorf("nbdinfo --list does not show the export:\n%s", out)
		}
	}
}

// nbdcopy round trip of random data over several connections at once (it
// opens four when the server offers MULTI_CONN), checked with qemu-img.
func TestNbdcopyRoundTripAndQemuImgCompare(t *testing.T) {
	requireTool(t, "nbdcopy")
	requireTool(t, "qemu-img")
	const size = 16 << 20
	mem := newMem(size, 4096)
	_, sock := startServer(t, mem, Options{})
	dir := t.TempDir()
	in := filepath.Join(dir, "in.img")
	data := make([]byte, size)
	rand.Read(data)
	clear(data[5<<20 : 7<<20]) // a zero run, which nbdcopy may send as WRITE_ZEROES
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "nbdcopy", "--connections=4", "--requests=16", in, uri(sock))
	if !bytes.Equal(mem.snapshot(), data) {
		t.Fatal("backend differs from the image nbdcopy wrote")
	}
	out := filepath.Join(dir, "out.img")
	run(t, "nbdcopy", uri(sock), out)
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("nbdcopy read back a different image (%v)", err)
	}
	qemuURI := fmt.Sprintf("nbd+unix:///?socket=%s", sock)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", in, qemuURI)
	// And compare must notice a difference.
	data[12345] ^= 1
	os.WriteFile(in, data, 0o600)
	if err := exec.Command("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", in, qemuURI).Run(); err == nil {
		t.Fatal("qemu-img compare missed a one-bit difference")
	}
	// qemu-img writes through the server too (qemu's own NBD client).
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", in, qemuURI)
	if !bytes.Equal(mem.snapshot(), data) {
		t.Fatal("qemu-img convert through the server lost data")
	}
}

// fio with verify=crc32c through its nbd engine, two jobs (two connections)
// at once on separate halves, random writes then verification reads.
func TestFioVerify(t *testing.T) {
	requireTool(t, "fio")
	mem := newMem(32<<20, 512)
	_, sock := startServer(t, mem, Options{})
	out := run(t, "fio", "--name=verify", "--ioengine=nbd", "--uri="+uri(sock),
		"--rw=randwrite", "--bsrange=4k-64k", "--iodepth=16", "--size=16m", "--numjobs=2",
		"--offset_increment=16m", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1",
		"--group_reporting", "--output-format=terse")
	if strings.Contains(out, "verify:") || strings.Contains(out, "bad magic") {
		t.Fatalf("fio reported verify errors:\n%s", out)
	}
}

// Several different clients at the same time, each on its own region.
func TestSeveralClientsAtOnce(t *testing.T) {
	requireTool(t, "nbdcopy")
	requireTool(t, "fio")
	requireTool(t, "nbdinfo")
	const size = 16 << 20
	mem := newMem(size, 512)
	_, sock := startServer(t, mem, Options{})
	dir := t.TempDir()
	img := make([]byte, 8<<20)
	rand.Read(img)
	in := filepath.Join(dir, "in.img")
	os.WriteFile(in, img, 0o600)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	start := func(name string, args ...string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(name, args...)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%s: %v\n%s", name, err, out)
			}
		}()
	}
	// nbdcopy fills the first half (through a size-limited view of the
	// source: it copies only the source's size).
	start("nbdcopy", "--connections=2", in, uri(sock))
	start("fio", "--name=second-half", "--ioengine=nbd", "--uri="+uri(sock), "--rw=randwrite",
		"--bs=4k", "--iodepth=8", "--offset=8m", "--size=8m", "--verify=crc32c", "--verify_fatal=1")
	for range 3 {
		start("nbdinfo", uri(sock))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !bytes.Equal(mem.snapshot()[:8<<20], img) {
		t.Fatal("first half differs from what nbdcopy wrote while fio ran beside it")
	}
}

// TCP is opened only on the address given, and real clients use it.
func TestTCPListenerWithNbdinfo(t *testing.T) {
	requireTool(t, "nbdinfo")
	srv, err := NewServer(newMem(1<<20, 512), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	out := run(t, "nbdinfo", "--size", "nbd://"+ln.Addr().String())
	if strings.TrimSpace(out) != "1048576" {
		t.Fatalf("nbdinfo over TCP: %q", out)
	}
	if ln.Addr().(*net.TCPAddr).IP.String() != "127.0.0.1" {
		t.Fatalf("listening on %v, not only the address asked for", ln.Addr())
	}
}
