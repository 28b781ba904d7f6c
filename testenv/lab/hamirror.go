package lab

import (
	"context"
	"fmt"
)

// HamirrorIfAvailable returns the hamirror Mirror over legs a and b if the
// image's mirrord can attach a volume to /dev/nbdN, else why not.
func HamirrorIfAvailable(ctx context.Context, n *Node, a, b string) (Mirror, bool, string) {
	res, err := n.Run(ctx, "mirrord volume --help 2>&1 | grep -q -e --device")
	if err != nil {
		return Mirror{}, false, err.Error()
	}
	if res.Exit != 0 {
		return Mirror{}, false, "this tree's mirrord has no `mirrord volume ... --device /dev/nbdN` " +
			"(kernel NBD attach of a volume, issue of branch nbd) yet"
	}
	return Hamirror(a, b), true, ""
}

// Hamirror is mirrord serving a fresh mirror of legs a and b on /dev/nbd0
// (mirrorctl create --force, then MirrordStart; teardown MirrordStop).
func Hamirror(a, b string) Mirror {
	return Mirror{
		Name:     "hamirror",
		Device:   "/dev/nbd0",
		Setup:    fmt.Sprintf("mirrorctl create --force %s %s >/dev/null && %s", a, b, MirrordStart(a, b)),
		Teardown: MirrordStop,
	}
}

// MirrordStart starts mirrord in the background serving legs a and b on
// /dev/nbd0 (control socket unix:/run/m.sock, log /run/mirrord.log) and
// waits up to 60 s for the device to show its size.
func MirrordStart(a, b string) string { return MirrordStartFlags("", a, b) }

// MirrordStartFlags is MirrordStart with more mirrord volume flags (e.g.
// "--control unix:/run/c.sock --auto-readd").
func MirrordStartFlags(flags, a, b string) string {
	return fmt.Sprintf(`mirrord volume --leg %s --leg %s --listen unix:/run/m.sock --device /dev/nbd0 %s >>/run/mirrord.log 2>&1 </dev/null &
for i in $(seq 600); do
	[ "$(cat /sys/block/nbd0/size 2>/dev/null)" -gt 0 ] 2>/dev/null && exit 0
	kill -0 $! 2>/dev/null || { echo "mirrord exited:"; tail -20 /run/mirrord.log; exit 1; }
	usleep 100000
done
echo "/dev/nbd0 not attached after 60 s:"; tail -20 /run/mirrord.log; exit 1`, a, b, flags)
}

// MirrordStop stops mirrord with SIGTERM and waits up to 60 s for it to
// exit and /dev/nbd0 to be released.
const MirrordStop = `pid=$(pidof mirrord) || exit 0
kill -TERM $pid
for i in $(seq 600); do
	kill -0 $pid 2>/dev/null || break
	usleep 100000
done
kill -0 $pid 2>/dev/null && { echo "mirrord still running 60 s after SIGTERM"; exit 1; }
for i in $(seq 100); do
	[ "$(cat /sys/block/nbd0/size 2>/dev/null)" = 0 ] && exit 0
	usleep 100000
done
echo "/dev/nbd0 still attached after mirrord exited"; exit 1`
