package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// lunSpec is one LUN of a plainArray: a sparse backing file of size
// bytes with blockSize-byte logical blocks (0: 512) and extra tgtadm
// params (e.g. "thin_provisioning=1").
type lunSpec struct {
	size      int64
	blockSize int
	params    string
}

// plainArray is a real tgtd without CHAP whose target 1 (iqn) holds one
// LUN per lunSpec, numbered from 1, each backed by a sparse file in dir.
type plainArray struct {
	td   *iscsitarget.Tgtd
	imgs []string
	urls []string
}

func startPlainArray(t *testing.T, dir, name, iqn string, luns ...lunSpec) *plainArray {
	t.Helper()
	if err := iscsitarget.TgtdAvailable(); err != nil {
		t.Skipf("SKIPPED LOUDLY: %v", err)
	}
	td, err := iscsitarget.StartTgtd(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		td.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(td.Log); err == nil && len(b) > 0 {
				t.Logf("tgtd %s log:\n%s", name, b[max(0, len(b)-2000):])
			}
		}
	})
	a := &plainArray{td: td}
	var ls []iscsitarget.LUN
	for i, l := range luns {
		img := filepath.Join(dir, fmt.Sprintf("%s-%d.img", name, i+1))
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, l.size); err != nil {
			t.Fatal(err)
		}
		a.imgs = append(a.imgs, img)
		a.urls = append(a.urls, fmt.Sprintf("iscsi://%s/%s/%d", td.Portal, iqn, i+1))
		ls = append(ls, iscsitarget.LUN{Backing: img, BlockSize: l.blockSize, Params: l.params})
	}
	if err := td.AddTargetLUNs(1, iqn, ls); err != nil {
		t.Fatal(err)
	}
	return a
}
