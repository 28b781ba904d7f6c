// Package mirror is hamirror's mirror engine: it combines two legs (files,
// block devices or iSCSI LUNs) into one volume that writes every block to
// both and never loses an acknowledged write.
//
// The on-leg format is documented byte by byte in FORMAT.md. The frontends
// (mirror/nbd, the kernel /dev/nbdN attach) and the daemon in cmd/mirrord sit
// on top of a *Volume; this package never imports heartbeat/ or resources/.
package mirror
