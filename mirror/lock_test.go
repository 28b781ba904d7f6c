package mirror

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A leg locked by one holder is refused to another, naming the holder's
// pid, however the leg is spelled; released, it can be locked again.
func TestLegLocks(t *testing.T) {
	dir := t.TempDir()
	locks := filepath.Join(dir, "locks")
	a := tempLegFile(t, dir, "a", 1<<20)
	b := tempLegFile(t, dir, "b", 1<<20)
	if err := os.Link(a, filepath.Join(dir, "a-link")); err != nil {
		t.Fatal(err)
	}
	url := "iscsi://array.example:3260/iqn.2026-01.org.example:t/1"
	l1, err := LockLegs(locks, a, b, url)
	if err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(os.Getpid())
	for _, spelling := range []string{a, filepath.Join(dir, "a-link"), filepath.Join(dir, ".", "b"), "iscsi://user@ARRAY.example/iqn.2026-01.org.EXAMPLE:t/1"} {
		_, err := LockLegs(locks, spelling)
		if !errors.Is(err, ErrLegLocked) || !strings.Contains(err.Error(), "held by pid "+pid) {
			t.Errorf("locking %s while held: %v, want ErrLegLocked naming pid %s", spelling, err, pid)
		}
	}
	if _, err := LockLegs(locks, a, filepath.Join(dir, "a-link")); err == nil || !strings.Contains(err.Error(), "same leg") {
		t.Errorf("one leg twice: %v", err)
	}
	// Add: held already is a no-op; a new leg is locked and dropped.
	if drop, err := l1.Add(a); err != nil {
		t.Fatal(err)
	} else {
		drop()
	}
	c := tempLegFile(t, dir, "c", 1<<20)
	drop, err := l1.Add(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockLegs(locks, c); !errors.Is(err, ErrLegLocked) {
		t.Fatalf("added leg not locked: %v", err)
	}
	drop()
	l2, err := LockLegs(locks, c)
	if err != nil {
		t.Fatalf("dropped leg still locked: %v", err)
	}
	l2.Unlock()
	if _, err := LockLegs(locks, a); !errors.Is(err, ErrLegLocked) {
		t.Fatalf("dropping an Add of a held leg released it: %v", err)
	}
	l1.Unlock()
	l3, err := LockLegs(locks, a, b, url)
	if err != nil {
		t.Fatalf("after Unlock: %v", err)
	}
	l3.Unlock()
}

// The kernel drops a dead holder's locks: nothing to clean up after a
// crash (here: a child process that locks and is killed).
func TestLegLocksDieWithTheProcess(t *testing.T) {
	if os.Getenv("HAMIRROR_LOCK_CHILD") != "" {
		if _, err := LockLegs(os.Getenv("HAMIRROR_LOCK_DIR"), os.Getenv("HAMIRROR_LOCK_CHILD")); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString("locked\n")
		select {}
	}
	dir := t.TempDir()
	leg := tempLegFile(t, dir, "a", 1<<20)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLegLocksDieWithTheProcess$")
	cmd.Env = append(os.Environ(), "HAMIRROR_LOCK_CHILD="+leg, "HAMIRROR_LOCK_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || string(buf) != "locked\n" {
		cmd.Process.Kill()
		t.Fatalf("child: %q %v", buf, err)
	}
	if _, err := LockLegs(dir, leg); err == nil || !strings.Contains(err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("while the child holds it: %v, want its pid", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := LockLegs(dir, leg)
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	l.Unlock()
}
