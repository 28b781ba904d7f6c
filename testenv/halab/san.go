package halab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// Array is one disk array of the SAN: a tgtd of its own (own portal, own
// control port) in the SAN namespace with one target and one LUN on a file.
// Both nodes reach it over their iSCSI cable. Kill, Pause (a hung array),
// Resume and Restart come from the embedded Tgtd.
type Array struct {
	*iscsitarget.Tgtd
	Name    string // "a", "b", ...
	IQN     string
	Backing string // the LUN's file on the host
}

// URL is the LUN's address for hamirror's initiator.
func (a *Array) URL() string { return fmt.Sprintf("iscsi://%s/%s/1", a.Portal, a.IQN) }

func (a *Array) close() error { return a.Stop() }

// Arrays returns the SAN's arrays.
func (l *Lab) Arrays() []*Array { return append([]*Array(nil), l.arrays...) }

func (l *Lab) startArrays(count int) error {
	if err := iscsitarget.TgtdAvailable(); err != nil {
		return err
	}
	san := l.ns("san")
	dial := func(addr string, timeout time.Duration) (net.Conn, error) {
		return DialIn(context.Background(), san, addr, timeout)
	}
	for i := range count {
		name := string(rune('a' + i))
		a := &Array{Name: name, IQN: "iqn.2026-01.lab.halab:array-" + name, Backing: filepath.Join(l.lunDir, "array-"+name+".img")}
		if err := os.WriteFile(a.Backing, nil, 0o600); err != nil {
			return err
		}
		if err := os.Truncate(a.Backing, l.opt.LUNSize); err != nil {
			return err
		}
		t, err := iscsitarget.StartTgtdWith(l.Dir, iscsitarget.TgtdOptions{
			Portal: fmt.Sprintf("10.30.0.%d:3260", i+1), Netns: san, Dial: dial})
		if err != nil {
			return fmt.Errorf("array %s: %w", name, err)
		}
		a.Tgtd = t
		l.arrays = append(l.arrays, a)
		if err := t.AddTarget(1, a.IQN, []string{a.Backing}, ""); err != nil {
			return fmt.Errorf("array %s: %w", name, err)
		}
	}
	return nil
}
