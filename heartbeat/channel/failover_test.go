package channel

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hamirror/hamirror/heartbeat"
)

// silentAddr returns an address whose SYNs the kernel drops, as a cut
// cable swallows them: a listener with a full accept queue (backlog 0,
// one connection waiting, never accepted).
func silentAddr(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
	for range 3 { // fill the queue; then a dial must hang
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the full listener still completes connections")
	return ""
}

// TestTCPFailsOverFromASilentLinkWithinTheCallBudget: nic1 swallows SYNs
// (a cable cut on the far side); a call whose budget is shorter than the
// dial timeout (services.log_timeout 500ms) must still reach the peer
// over nic2, every time, not spend its whole budget on nic1.
func TestTCPFailsOverFromASilentLinkWithinTheCallBudget(t *testing.T) {
	srvTr, err := NewTCP(TCPConfig{Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := srvTr.(*tcpTransport).lns[0].Addr().String()
	newCh(t, "n2", srvTr, testKey())
	cliTr, err := NewTCP(TCPConfig{Peers: map[heartbeat.NodeID][]Link{"n2": {
		{Medium: "nic1", Remote: silentAddr(t)}, {Medium: "nic2", Remote: addr}}}})
	if err != nil {
		t.Fatal(err)
	}
	cli := newCh(t, "n1", cliTr, testKey())
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		got, err := cli.Call(ctx, "n2", "echo", []byte("x"))
		cancel()
		if err != nil || string(got) != "n1:x" {
			t.Fatalf("call %d with nic1 silent: %q %v", i, got, err)
		}
		cli.Drop("n2") // a new connection each time
	}
}
