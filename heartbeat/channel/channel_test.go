package channel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

var testNodes = []heartbeat.NodeID{"n1", "n2", "n3"}

func testKey() []byte { return []byte("0123456789abcdef-test-cluster-key") }

func newCh(t *testing.T, id heartbeat.NodeID, tr Transport, key []byte) *Channel {
	t.Helper()
	ch := New(Config{Cluster: "c1", Self: id, Key: key, Nodes: testNodes, CallTimeout: 2 * time.Second}, tr)
	ch.Handle("echo", func(from heartbeat.NodeID, body []byte) ([]byte, error) {
		return append([]byte(string(from)+":"), body...), nil
	})
	ch.Handle("fail", func(heartbeat.NodeID, []byte) ([]byte, error) { return nil, errors.New("disk full") })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ch.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

func TestCallOverMemNetworkCutAndHeal(t *testing.T) {
	net := NewMemNetwork()
	a := newCh(t, "n1", net.Endpoint("n1"), testKey())
	newCh(t, "n2", net.Endpoint("n2"), testKey())
	ctx := context.Background()
	got, err := a.Call(ctx, "n2", "echo", []byte("hello"))
	if err != nil || string(got) != "n1:hello" {
		t.Fatalf("call: %q, %v", got, err)
	}
	if _, err := a.Call(ctx, "n2", "fail", nil); !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("remote error lost: %v", err)
	}
	var re *RemoteError
	if _, err := a.Call(ctx, "n2", "nope", nil); !errors.As(err, &re) {
		t.Fatalf("unknown op: %v", err)
	}
	net.Cut("n1", "n2", true)
	if _, err := a.Call(ctx, "n2", "echo", nil); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("call over a cut link: %v", err)
	}
	net.Cut("n1", "n2", false)
	if got, err := a.Call(ctx, "n2", "echo", []byte("again")); err != nil || string(got) != "n1:again" {
		t.Fatalf("after heal: %q, %v", got, err)
	}
}

func TestWrongKeyRefusedAndCounted(t *testing.T) {
	net := NewMemNetwork()
	a := newCh(t, "n1", net.Endpoint("n1"), []byte("another key entirely, 32 bytes.."))
	b := newCh(t, "n2", net.Endpoint("n2"), testKey())
	_, err := a.Call(context.Background(), "n2", "echo", nil)
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("call with the wrong key: %v", err)
	}
	if a.Counters().BadAuth != 1 {
		t.Errorf("client counters %+v", a.Counters())
	}
	// The server sent its proof and waits for the client's, which never comes.
	if b.Counters().Accepted != 0 {
		t.Errorf("server accepted a connection with the wrong key: %+v", b.Counters())
	}
}

// pipeTransport is a transport whose inbound streams a test hands in.
type pipeTransport struct {
	in     chan net.Conn
	closed chan struct{}
}

func newPipeTransport() *pipeTransport {
	return &pipeTransport{in: make(chan net.Conn, 4), closed: make(chan struct{})}
}

func (p *pipeTransport) Dial(context.Context, heartbeat.NodeID) (net.Conn, error) {
	return nil, ErrUnreachable
}

func (p *pipeTransport) Accept() (net.Conn, error) {
	select {
	case c := <-p.in:
		return c, nil
	case <-p.closed:
		return nil, ErrClosed
	}
}

func (p *pipeTransport) Close() error {
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	return nil
}

// readUnit reads one handshake message (hs) or one data frame from r and
// returns its raw bytes.
func readUnit(r io.Reader, hs bool) ([]byte, error) {
	if hs {
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, err
		}
		b := make([]byte, 2+int(binary.BigEndian.Uint16(l[:])))
		copy(b, l[:])
		_, err := io.ReadFull(r, b[2:])
		return b, err
	}
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	b := make([]byte, frameHeader+int(binary.BigEndian.Uint32(h[:])))
	copy(b, h[:])
	_, err := io.ReadFull(r, b[frameHeader:])
	return b, err
}

// mitm relays a client to the server's channel; tamper sees every data
// frame the client sends (after the two handshake messages) and returns
// what to forward. It returns the client's conn and a record of
// everything the client sent.
func mitm(t *testing.T, srv *pipeTransport, tamper func(i int, f []byte) [][]byte) (net.Conn, *bytes.Buffer) {
	cli, m1 := net.Pipe()
	m2, s := net.Pipe()
	srv.in <- s
	rec := &bytes.Buffer{}
	go func() { io.Copy(m1, m2); m1.Close() }()
	go func() {
		defer m2.Close()
		for i := 0; ; i++ {
			u, err := readUnit(m1, i < 2)
			if err != nil {
				return
			}
			rec.Write(u)
			out := [][]byte{u}
			if i >= 2 {
				out = tamper(i-2, u)
			}
			for _, o := range out {
				if _, err := m2.Write(o); err != nil {
					return
				}
			}
		}
	}()
	return cli, rec
}

func clientConn(t *testing.T, raw net.Conn) *Conn {
	t.Helper()
	c := New(Config{Cluster: "c1", Self: "n1", Key: testKey(), Nodes: testNodes}, nil)
	conn, err := clientHandshake(raw, c.hs, "n2")
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func callOn(conn *Conn, op string, body []byte) ([]byte, error) {
	req, _ := marshalRequest(op, body)
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if err := conn.Send(req); err != nil {
		return nil, err
	}
	p, err := conn.Recv()
	if err != nil {
		return nil, err
	}
	return parseResponse("n2", op, p)
}

func waitCount(t *testing.T, what string, get func() uint64, want uint64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for get() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d, want %d", what, get(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestForgedMessageRefusedAndCounted(t *testing.T) {
	tr := newPipeTransport()
	srv := newCh(t, "n2", tr, testKey())
	cli, _ := mitm(t, tr, func(i int, f []byte) [][]byte {
		if i == 1 {
			f[len(f)-20] ^= 1 // flip a bit of the second request's ciphertext
		}
		return [][]byte{f}
	})
	conn := clientConn(t, cli)
	if got, err := callOn(conn, "echo", []byte("one")); err != nil || string(got) != "n1:one" {
		t.Fatalf("first call: %q %v", got, err)
	}
	if _, err := callOn(conn, "echo", []byte("two")); err == nil {
		t.Fatal("a tampered request was answered")
	}
	waitCount(t, "bad_auth", func() uint64 { return srv.Counters().BadAuth }, 1)
}

func TestReplayWithinConnectionRefusedAndCounted(t *testing.T) {
	tr := newPipeTransport()
	srv := newCh(t, "n2", tr, testKey())
	var first []byte
	cli, _ := mitm(t, tr, func(i int, f []byte) [][]byte {
		if i == 0 {
			first = bytes.Clone(f)
			return [][]byte{f}
		}
		return [][]byte{first} // replay the first request instead of the second
	})
	conn := clientConn(t, cli)
	if _, err := callOn(conn, "echo", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := callOn(conn, "echo", []byte("two")); err == nil {
		t.Fatal("a replayed request was answered")
	}
	waitCount(t, "replayed", func() uint64 { return srv.Counters().Replayed }, 1)
	if srv.Counters().BadAuth != 0 {
		t.Errorf("a replay counted as forged: %+v", srv.Counters())
	}
}

func TestReplayAcrossConnectionsRefused(t *testing.T) {
	tr := newPipeTransport()
	srv := newCh(t, "n2", tr, testKey())
	cli, rec := mitm(t, tr, func(_ int, f []byte) [][]byte { return [][]byte{f} })
	conn := clientConn(t, cli)
	if _, err := callOn(conn, "echo", []byte("pay me")); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	// Play the whole recorded client side again on a new connection.
	a, b := net.Pipe()
	tr.in <- b
	go func() {
		io.Copy(io.Discard, a)
	}()
	a.Write(rec.Bytes())
	waitCount(t, "bad_auth", func() uint64 { return srv.Counters().BadAuth }, 1)
	if srv.Counters().Accepted != 1 {
		t.Errorf("the replayed session was accepted: %+v", srv.Counters())
	}
	a.Close()
}

func TestUnknownNodeRefused(t *testing.T) {
	tr := newPipeTransport()
	srv := newCh(t, "n2", tr, testKey())
	a, b := net.Pipe()
	tr.in <- b
	c := New(Config{Cluster: "c1", Self: "intruder", Key: testKey(), Nodes: append(testNodes, "intruder")}, nil)
	if _, err := clientHandshake(a, c.hs, "n2"); err == nil {
		t.Fatal("handshake from a node outside the cluster succeeded")
	}
	waitCount(t, "bad_peer", func() uint64 { return srv.Counters().BadPeer }, 1)
}

func TestTCPFailsOverToSecondLink(t *testing.T) {
	srvTr, err := NewTCP(TCPConfig{Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := srvTr.(*tcpTransport).lns[0].Addr().String()
	newCh(t, "n2", srvTr, testKey())
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there: nic1 is "cut"
	cliTr, err := NewTCP(TCPConfig{Peers: map[heartbeat.NodeID][]Link{"n2": {
		{Medium: "nic1", Remote: deadAddr}, {Medium: "nic2", Remote: addr}}}})
	if err != nil {
		t.Fatal(err)
	}
	cli := newCh(t, "n1", cliTr, testKey())
	got, err := cli.Call(context.Background(), "n2", "echo", []byte("x"))
	if err != nil || string(got) != "n1:x" {
		t.Fatalf("call: %q %v", got, err)
	}
	if g := cliTr.(*tcpTransport).good["n2"]; g != 1 {
		t.Errorf("the working link is not remembered: %d", g)
	}
}

func TestTCPConfigFromUsesPrivateLinksOnly(t *testing.T) {
	cfg := heartbeat.Config{Self: "n1", Nodes: []heartbeat.Node{
		{ID: "n1", Links: []heartbeat.NIC{{Medium: "nic1", Address: "10.0.1.1"}, {Medium: "nic2", Address: "10.0.2.1"}}, Serial: "/dev/ttyS1"},
		{ID: "n2", Links: []heartbeat.NIC{{Medium: "nic2", Address: "10.0.2.2"}, {Medium: "nic1", Address: "10.0.1.2"}}, Serial: "/dev/ttyS1"},
	}}
	tc := TCPConfigFrom(cfg, 5406)
	want := []Link{{"nic1", "10.0.1.1", "10.0.1.2:5406"}, {"nic2", "10.0.2.1", "10.0.2.2:5406"}}
	if len(tc.Peers["n2"]) != 2 || tc.Peers["n2"][0] != want[0] || tc.Peers["n2"][1] != want[1] {
		t.Errorf("peers %+v", tc.Peers)
	}
	if len(tc.Listen) != 2 || tc.Listen[0] != "10.0.1.1:5406" {
		t.Errorf("listen %v", tc.Listen)
	}
}
