package mirror

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testLog returns a logger writing to the test log when -v is given.
func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// tempLegFile creates a sparse file of size bytes and returns its path.
func tempLegFile(t testing.TB, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func openTestLeg(t testing.TB, path string) Leg {
	t.Helper()
	l, err := OpenLeg(path, LegOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testOptions are fast defaults for tests.
func testOptions(t testing.TB) Options {
	o := DefaultOptions()
	o.NodeID = "test-node"
	o.Logger = testLog(t)
	o.BitClearDelay = 20 * time.Millisecond
	o.ResyncMinRate = 0
	return o
}

// fileVolume creates and assembles a volume on two temp files.
func fileVolume(t testing.TB, size int64, chunk int64) (*Volume, [2]string) {
	t.Helper()
	dir := t.TempDir()
	paths := [2]string{tempLegFile(t, dir, "leg0", size), tempLegFile(t, dir, "leg1", size)}
	legs := [2]Leg{openTestLeg(t, paths[0]), openTestLeg(t, paths[1])}
	if _, err := Create(legs, CreateOptions{ChunkSize: chunk, NodeID: "test-node"}); err != nil {
		t.Fatal(err)
	}
	v, err := Assemble(legs, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	return v, paths
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// legsIdentical compares the data areas of two leg files.
func legsIdentical(t testing.TB, paths [2]string, size int64) bool {
	t.Helper()
	a, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(a[:size], b[:size])
}

func waitInSync(t testing.TB, v *Volume) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := v.WaitInSync(ctx); err != nil {
		t.Fatalf("WaitInSync: %v (status %+v)", err, v.Status())
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
