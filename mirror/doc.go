// Package mirror is hamirror's mirror engine: it combines two legs (files,
// block devices or iSCSI LUNs) into one volume that writes every block to
// both and never loses an acknowledged write.
//
// Create writes fresh metadata on two legs; Assemble opens them as a
// *Volume that serves reads and writes, survives a leg failing or hanging
// (it continues degraded), resyncs only what changed when a leg comes back,
// verifies and repairs online, and refuses to merge legs written separately
// (split brain):
//
//	a, _ := mirror.OpenLeg("/dev/sdb", mirror.LegOptions{})
//	b, _ := mirror.OpenLeg("/dev/sdc", mirror.LegOptions{})
//	if _, err := mirror.Create([2]mirror.Leg{a, b}, mirror.CreateOptions{}); err != nil { ... }
//	opts := mirror.DefaultOptions()            // KeepLeg -1, timeouts, rates
//	opts.Known = peerKnowledge                 // optional: lets a lone leg the peer proves newest start
//	v, err := mirror.Assemble([2]mirror.Leg{a, b}, opts)
//	var sb *mirror.SplitBrainError             // both legs written separately
//	var lone *mirror.LoneLegError              // one leg, not provably the newest
//	var unread *mirror.UnreadableLegError      // a leg's metadata cannot be read
//	if errors.As(err, &sb) || errors.As(err, &lone) || errors.As(err, &unread) {
//		... explain err to the operator; opts.KeepLeg = N only on their word ...
//	}
//	v.WriteAt(p, off, false); v.Flush(); v.ReadAt(p, off)
//	v.FailLeg(1); v.AddLeg(1, nil)             // reopen by name; refused if it may hold newer data
//	st := v.Status()                           // JSON for `mirrorctl status --json`
//	v.Close()                                  // flush, mark clean
//
// A daemon locks the legs on its node before it opens them, and turns on
// multi-mount protection so no other node writes the volume meanwhile:
//
//	locks, err := mirror.LockLegs(mirror.DefaultLockDir, specA, specB) // refused: names the holder's pid
//	defer locks.Unlock()
//	opts.MMP = mirror.MMPOptions{Interval: time.Second} // Fenced: true after a takeover's PREEMPT; TakenIsFence in a fencing cluster
//	v, err := mirror.Assemble(legs, opts)               // *MMPError (ErrInUse): another owner runs
//
// v.BlockSize() is the largest logical block size of the legs; misaligned
// I/O is refused with ErrMisaligned (EINVAL). v.Zero cuts large ranges
// into pieces that fit the I/O timeout.
//
// The on-leg format is documented byte by byte in FORMAT.md. Decisions
// about legs and chunks live in one pure state machine (machine.go, with
// its ordering rules; the leg lifecycle in legs.go, scripted by
// testdata/lifecycle; which copy is newest in generations.go); the Volume
// performs the I/O it asks for. An iSCSI RESERVATION CONFLICT fences the
// volume (ErrFenced) instead of failing a leg. The failover node plugs in
// through Options.Known, Publish, OpenLeg, BeforeReAdd and OnFenced, and
// Volume.Known. Time comes from Options.Clock. The frontends (mirror/nbd, the kernel /dev/nbdN
// attach) and the daemon in cmd/mirrord sit on top of a *Volume; this
// package never imports heartbeat/ or resources/. Package mirror/legtest
// holds in-memory and fault-injecting legs for tests.
package mirror
