package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Dial connects from inside the lab's namespace, the host side of the
// iSCSI and public networks (10.77.N.254), so that code in the test
// process reaches the VMs: give it as iscsi.Config.Dial to run hamirror's
// initiator against a target inside a VM (a LIO array, lio.go).
func (l *Lab) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The socket is created on this thread, inside the namespace, and
		// stays there; the thread goes back before anyone else may use it.
		// If it cannot go back it stays locked and dies with the goroutine.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + l.ns.name)
		if err != nil {
			done <- result{nil, fmt.Errorf("lab namespace %s: %w", l.ns.name, err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{nil, fmt.Errorf("entering lab namespace %s: %w", l.ns.name, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr == nil {
			runtime.UnlockOSThread()
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}
