package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Takeover safety through the commands (issue 10, findings 1 and 2), with
// file legs: the operator's story, as the issue reproduced it.

// kill is kill -9 of mirrord: no shutdown, no clean mark.
func (l *lab) kill() {
	l.t.Helper()
	l.cmd.Process.Kill()
	select {
	case <-l.exited:
	case <-time.After(30 * time.Second):
		l.t.Fatal("mirrord did not die")
	}
}

// fillMiB writes the first MiB of the volume with b (flushed).
func (l *lab) fillMiB(b byte) {
	l.t.Helper()
	src := filepath.Join(l.dir, fmt.Sprintf("fill-%02x", b))
	if err := os.WriteFile(src, bytes.Repeat([]byte{b}, 1<<20), 0o600); err != nil {
		l.t.Fatal(err)
	}
	runTool(l.t, l.dir, "nbdcopy", "--flush", src, l.uri())
}

// firstMiB reads the first MiB of the volume.
func (l *lab) firstMiB() []byte {
	l.t.Helper()
	dst := filepath.Join(l.dir, "first")
	os.Remove(dst)
	runTool(l.t, l.dir, "nbdcopy", l.uri(), dst)
	b, err := os.ReadFile(dst)
	if err != nil {
		l.t.Fatal(err)
	}
	return b[:1<<20]
}

func legByte(t *testing.T, path string) byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b[0]
}

// staleLeg0 runs the steps: create, write 0x11, fail leg 0, write
// 0x22 (flushed), kill -9. Leg 1 then holds the acknowledged data.
func staleLeg0(t *testing.T) *lab {
	requireTools(t, "nbdcopy")
	l := newLab(t, 32<<20)
	l.mustCtl("create", l.legs[0], l.legs[1])
	l.start(l.legs)
	l.fillMiB(0x11)
	l.mustCtl("leg", "fail", "0")
	l.fillMiB(0x22)
	l.kill()
	return l
}

// Finding 1: started again with leg 1 missing, mirrord must not serve leg
// 0's old data. It stays up without exporting, status says why and how to
// force, and it starts by itself once leg 1 is back, serving 0x22.
func TestVolumeStaleLoneLegIsNotServed(t *testing.T) {
	l := staleLeg0(t)
	away := l.legs[1] + ".away"
	if err := os.Rename(l.legs[1], away); err != nil {
		t.Fatal(err)
	}
	l.start(l.legs)
	st := l.status()
	if st.State != "waiting" || !strings.Contains(st.Error, "--keep-leg 0") {
		t.Fatalf("lone stale leg: status %+v, want state waiting and how to force", st)
	}
	if listening(l.sock) {
		got := l.firstMiB()
		t.Fatalf("mirrord exports the lone stale leg (it serves %#x, the acknowledged data is 0x22)", got[0])
	}
	if out, err := l.ctlRun("status"); err == nil || !strings.Contains(out, "NOT SERVED") {
		t.Fatalf("human status of a held volume: %v\n%s", err, out)
	}
	if err := os.Rename(away, l.legs[1]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for l.status().State == "waiting" || !listening(l.sock) {
		if time.Now().After(deadline) {
			t.Fatalf("mirrord did not start once leg 1 was back:\n%s", l.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := l.firstMiB(); got[0] != 0x22 || got[len(got)-1] != 0x22 {
		t.Fatalf("volume serves %#x, want the acknowledged 0x22", got[0])
	}
	l.stop()
}

// Finding 2: the operator forces leg 0 (--keep-leg 0) while leg 1 is away;
// leg 1, back, holds data leg 0 never saw. `mirrorctl leg add 1` refuses
// (split brain) and leg 1 keeps its data; `--force` then overwrites it.
func TestVolumeNewerLegIsNotOverwrittenByLegAdd(t *testing.T) {
	l := staleLeg0(t)
	away := l.legs[1] + ".away"
	if err := os.Rename(l.legs[1], away); err != nil {
		t.Fatal(err)
	}
	l.start(l.legs, "--keep-leg", "0")
	if st := l.status(); st.State != "degraded" {
		t.Fatalf("forced start on leg 0: %+v", st)
	}
	if err := os.Rename(away, l.legs[1]); err != nil {
		t.Fatal(err)
	}
	out, err := l.ctlRun("leg", "add", "1")
	if err == nil || !strings.Contains(out, "split brain") || !strings.Contains(out, "--force") {
		t.Fatalf("leg add of the newer leg: %v\n%s", err, out)
	}
	time.Sleep(500 * time.Millisecond)
	if b := legByte(t, l.legs[1]); b != 0x22 {
		t.Fatalf("leg 1 holds %#x after the refused add, want its own 0x22", b)
	}
	l.mustCtl("leg", "add", "1", "--force")
	l.mustCtl("resync", "--wait")
	l.stop()
	if b := legByte(t, l.legs[1]); b != 0x11 {
		t.Fatalf("after the forced add leg 1 holds %#x, want the kept 0x11", b)
	}
}

// listening: an NBD server accepts on the socket (a killed mirrord leaves
// its socket file behind).
func listening(path string) bool {
	c, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
