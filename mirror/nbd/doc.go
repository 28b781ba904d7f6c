// Package nbd is hamirror's NBD server: it exports one Backend (in mirrord,
// the mirrored *mirror.Volume) to NBD clients over unix or TCP sockets, and
// hands it to the Linux kernel as /dev/nbdN.
//
// Serving a socket:
//
//	srv, err := nbd.NewServer(vol, nbd.Options{ExportName: "vol0"})
//	ln, err := nbd.Listen("unix:/run/hamirror/vol0.sock") // mode 0600
//	go srv.Serve(ln)
//	...
//	srv.Shutdown(ctx) // answer what was read, then close
//
// Attaching the kernel device (Linux, root):
//
//	dev, err := nbd.Attach(srv, nbd.AttachOptions{Device: "/dev/nbd0"})
//	defer dev.Detach()
//
// The server speaks fixed newstyle negotiation with NBD_OPT_GO, INFO,
// EXPORT_NAME, LIST, ABORT and STRUCTURED_REPLY, reports honest block sizes
// (the backend's alignment, 4 KiB, MaxPayload) and serves READ, WRITE (FUA),
// FLUSH, TRIM, WRITE_ZEROES (NO_HOLE) and DISC. One goroutine per connection
// decodes requests in order; a bounded pool of workers serves them
// concurrently; each reply is written whole, so replies never interleave.
// While the backend answers small reads and writes within tens of
// microseconds (tmpfs, page cache) the decoding goroutine serves them
// itself, which costs less than a hand-off; a slower backend (iSCSI legs, a
// stalling leg) switches the connection back to the workers. Replies that
// complete together are flushed in one write.
// NBD_FLAG_CAN_MULTI_CONN is advertised because FLUSH reaches the backend,
// which flushes its legs for writes from every connection.
//
// Requests that are out of range, misaligned, oversized or carry unknown
// flags are answered with the protocol's error (EINVAL, ENOSPC, EOVERFLOW);
// a client that breaks framing (bad magic, oversized options) is dropped
// without touching the other connections.
//
// This package is a leaf: it does not import package mirror; cmd/mirrord
// wires a Volume in.
package nbd
