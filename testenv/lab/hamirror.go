package lab

import (
	"context"
)

// HamirrorIfAvailable returns the hamirror Mirror over legs a and b if the
// image's mirrord can attach a volume to /dev/nbdN, else why not.
func HamirrorIfAvailable(ctx context.Context, n *Node, a, b string) (Mirror, bool, string) {
	res, err := n.Run(ctx, "mirrord volume --help 2>&1 | grep -q -e --device")
	if err != nil {
		return Mirror{}, false, err.Error()
	}
	if res.Exit != 0 {
		return Mirror{}, false, "mirrord has no `volume --device` command yet (kernel NBD attach is not on this branch)"
	}
	return Hamirror(a, b), true, ""
}

// Hamirror is mirrord serving a mirror of legs a and b on /dev/nbd0.
func Hamirror(a, b string) Mirror {
	return Mirror{
		Name:     "hamirror",
		Device:   "/dev/nbd0",
		Setup:    "false # TODO: mirrord volume",
		Teardown: "true",
	}
}
