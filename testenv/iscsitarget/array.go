package iscsitarget

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Array is a test array: a tgtd with target 1 holding one LUN (number 1)
// backed by a sparse file.
type Array struct {
	*Tgtd
	Name string
	Img  string // the LUN's backing file: what the array really stored
	IQN  string // iqn.2026-01.org.hamirror.test:NAME
	URL  string // iscsi://PORTAL/IQN/1
}

// StartArray starts an Array named name with a LUN of size bytes, its
// files in dir. The test is skipped, loudly, where tgtd cannot run; the
// array is stopped when the test ends, and tgtd's log tail is logged if
// the test failed.
func StartArray(t testing.TB, dir, name string, size int64) *Array {
	t.Helper()
	if err := TgtdAvailable(); err != nil {
		t.Skipf("test needs tgtd: %v", err)
	}
	img := filepath.Join(dir, name+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	td, err := StartTgtd(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		td.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(td.Log); err == nil && len(b) > 0 {
				t.Logf("tgtd %s log (tail):\n%s", name, tail(b, 2000))
			}
		}
	})
	a := &Array{Tgtd: td, Name: name, Img: img, IQN: "iqn.2026-01.org.hamirror.test:" + name}
	if err := td.AddTarget(1, a.IQN, []string{img}, ""); err != nil {
		t.Fatal(err)
	}
	a.URL = fmt.Sprintf("iscsi://%s/%s/1", td.Portal, a.IQN)
	return a
}

// tail is the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
