package iscsitarget

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

// A Disk opened in the background while its array is down: commands fail
// fast with ErrNotConnected, nothing is sized, WaitReady waits; when the
// array comes up the same Disk logs in, identifies the LUN and carries
// I/O. Closing a Disk that never logged in ends WaitReady with ErrClosed.
func TestTgtdOpenInBackground(t *testing.T) {
	a := StartArray(t, t.TempDir(), "array-a", 8<<20)
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	cfg := iscsi.Config{Timeout: time.Second, ReconnectInterval: 50 * time.Millisecond}
	d, err := iscsi.OpenLegInBackground(a.URL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := iscsi.OpenLegInBackground("iscsi://nowhere", cfg); err == nil {
		t.Fatal("a bad leg URL was accepted")
	}
	time.Sleep(200 * time.Millisecond) // a few failed logins
	if d.Ready() || d.Connected() || d.Size() != 0 || d.BlockSize() != 0 {
		t.Fatalf("before the first login: ready %v connected %v size %d", d.Ready(), d.Connected(), d.Size())
	}
	err = d.ReadAt(make([]byte, 4096), 0)
	if !errors.Is(err, iscsi.ErrNotConnected) || !errors.Is(err, iscsi.ErrDisconnected) {
		t.Fatalf("read before the first login: %v, want ErrNotConnected and ErrDisconnected", err)
	}
	t.Logf("read before the first login: %v", err)
	if err := d.Flush(); !errors.Is(err, iscsi.ErrNotConnected) {
		t.Fatalf("flush before the first login: %v", err)
	}
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := d.WaitReady(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady with the array down: %v", err)
	}

	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	long, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := d.WaitReady(long); err != nil {
		t.Fatal(err)
	}
	if d.Size() != 8<<20 || d.BlockSize() != 512 && d.BlockSize() != 4096 || d.Info().Vendor == "" {
		t.Fatalf("after the first login: size %d block size %d info %+v", d.Size(), d.BlockSize(), d.Info())
	}
	waitConnected(t, d, 5*time.Second)
	data := pattern(9, 8192)
	if err := d.WriteAt(data, 8192, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := d.ReadAt(got, 8192); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "read back", got, data)

	// Later outages are ordinary reconnects of a Ready Disk.
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := d.ReadAt(got, 0); err == nil || errors.Is(err, iscsi.ErrNotConnected) {
		t.Fatalf("read with the array killed after the first login: %v, want a plain disconnection", err)
	}
	if !d.Ready() || d.Size() != 8<<20 {
		t.Fatal("a Disk stopped being Ready after an outage")
	}

	never, err := iscsi.OpenLegInBackground(a.URL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	never.Close()
	if err := never.WaitReady(long); !errors.Is(err, iscsi.ErrClosed) {
		t.Fatalf("WaitReady on a Disk closed before its first login: %v, want ErrClosed", err)
	}
	if err := never.WriteAt(make([]byte, 4096), 0, false); !errors.Is(err, iscsi.ErrClosed) {
		t.Fatalf("write on a Disk closed before its first login: %v, want ErrClosed", err)
	}
}
