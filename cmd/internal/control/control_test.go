package control

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	addr := "unix:" + filepath.Join(t.TempDir(), "ctl.sock")
	s, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return s, addr
}

func TestCallRoundTripAndErrors(t *testing.T) {
	s, addr := startServer(t)
	s.Handle("echo", func(args json.RawMessage) (any, error) {
		var in struct{ N int }
		if err := json.Unmarshal(args, &in); err != nil {
			return nil, err
		}
		return map[string]int{"n": in.N * 2}, nil
	})
	s.Handle("fail", func(json.RawMessage) (any, error) { return nil, errors.New("leg 1 is not failed") })
	s.Handle("panic", func(json.RawMessage) (any, error) { panic("boom") })

	var out struct{ N int }
	if err := Call(addr, "echo", map[string]int{"N": 21}, &out); err != nil || out.N != 42 {
		t.Fatalf("echo: %v %+v", err, out)
	}
	var re *RemoteError
	if err := Call(addr, "fail", nil, nil); !errors.As(err, &re) || re.Msg != "leg 1 is not failed" {
		t.Fatalf("fail: got %v", err)
	}
	if err := Call(addr, "nope", nil, nil); err == nil || !strings.Contains(err.Error(), "unknown operation") {
		t.Fatalf("unknown op: got %v", err)
	}
	if err := Call(addr, "panic", nil, nil); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("panicking handler: got %v", err)
	}
	// The server survived all of that.
	if err := Call(addr, "echo", map[string]int{"N": 1}, &out); err != nil || out.N != 2 {
		t.Fatalf("after errors: %v %+v", err, out)
	}
}

func TestSocketIsPrivateAndStaleSocketReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctl.sock")
	// A stale socket left by a crashed daemon.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	s, err := Listen("unix:" + path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	go s.Serve()
	if _, err := Listen("unix:" + path); err == nil {
		t.Fatal("second daemon took over a live control socket")
	}
}

func TestMalformedRequestDoesNotKillServer(t *testing.T) {
	s, addr := startServer(t)
	s.Handle("ping", func(json.RawMessage) (any, error) { return "pong", nil })
	c, err := net.Dial("unix", strings.TrimPrefix(addr, "unix:"))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("{not json\n"))
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	c.Close()
	if !strings.Contains(string(buf[:n]), "malformed request") {
		t.Fatalf("reply to garbage: %q", buf[:n])
	}
	var out string
	if err := Call(addr, "ping", nil, &out); err != nil || out != "pong" {
		t.Fatalf("after garbage: %v %q", err, out)
	}
}
