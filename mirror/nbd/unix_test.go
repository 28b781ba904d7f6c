package nbd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// processUmask reads the umask from /proc (umask(2) cannot read it
// without setting it).
func processUmask(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatalf("no /proc/self/status to read the umask from: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Umask:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("/proc/self/status has no Umask line (Linux 4.7 and later have it)")
	return ""
}

// Sockets made at the same time by two goroutines (mirrord's control and
// NBD sockets; two in-process nodes in a test) are 0600 from the start
// and leave the process umask as it was: a umask set and restored around
// each listen could stay set for good (0177), and every folder the
// process or its children made afterwards was one its owner could not
// enter (the failover lab's /run/postgresql: PostgreSQL "could not open
// lock file ... Permission denied").
func TestListenUnix0600KeepsTheUmask(t *testing.T) {
	dir := t.TempDir()
	before := processUmask(t)
	for round := range 200 {
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				path := filepath.Join(dir, fmt.Sprintf("%d-%d", round, i))
				ln, err := ListenUnix0600(path)
				if err != nil {
					errs <- err
					return
				}
				defer ln.Close()
				if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
					errs <- fmt.Errorf("socket %s: mode %v (%v), want 0600", path, fi.Mode().Perm(), err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if now := processUmask(t); now != before {
			t.Fatalf("after round %d of two listens at once the process umask is %s; it was %s", round, now, before)
		}
	}
}
