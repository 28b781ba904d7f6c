package volumed

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/cmd/internal/control"
	"github.com/hamirror/hamirror/mirror"
)

// A volume whose legs do not prove which copy is newest is held: nothing
// is exported, status says why, the other ops refuse; once the missing leg
// is back the volume starts by itself. File legs, the real engine.
func TestHoldsUntilTheMissingLegIsBack(t *testing.T) {
	dir, err := os.MkdirTemp("", "vd") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	legs := [2]string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}
	var opened [2]mirror.Leg
	for i, p := range legs {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 16<<20); err != nil {
			t.Fatal(err)
		}
		if opened[i], err = mirror.OpenLeg(p, mirror.LegOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := mirror.Create(opened, mirror.CreateOptions{ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	opened[0].Close()
	opened[1].Close()
	if err := os.Rename(legs[1], legs[1]+".away"); err != nil {
		t.Fatal(err)
	}
	ctl := "unix:" + filepath.Join(dir, "ctl")
	sock := filepath.Join(dir, "nbd")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Legs: legs, Listen: []string{"unix:" + sock}, Control: ctl, KeepLeg: -1, Name: "t",
			Engine: mirror.DefaultOptions(), RetryInterval: 50 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Stderr: io.Discard,
		})
	}()
	var st daemonStatus
	waitFor(t, func() bool { return control.Call(ctl, "status", nil, &st) == nil && st.State != "" })
	if st.State != "waiting" || !strings.Contains(st.Error, "--keep-leg 0") {
		t.Fatalf("held status: %+v", st)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("a held volume is exported")
	}
	var remote *control.RemoteError
	if err := control.Call(ctl, "resync", nil, nil); !errors.As(err, &remote) || !strings.Contains(err.Error(), "not assembled") {
		t.Fatalf("resync on a held volume: %v", err)
	}
	if err := os.Rename(legs[1]+".away", legs[1]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return control.Call(ctl, "status", nil, &st) == nil && st.State == "clean" })
	if len(st.NBD.Listen) != 1 {
		t.Fatalf("started volume: %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
