// Package volume is the volume resource: it assembles the mirrored volume
// from its two legs (with the peer's knowledge of the volume when the node
// has it, so a lone leg is used only when it is known current), serves it
// over NBD sockets and attaches it as a block device (/dev/nbdN, or a loop
// device over nbdfuse on hosts without the nbd module); Stop detaches,
// drains the NBD clients, flushes both legs and marks the volume clean.
//
//	v := volume.New(volume.Options{Legs: [2]string{a, b}, Device: "/dev/nbd0", Mirror: mirror.DefaultOptions()})
//	v.Prepare(known, fenced)  // what the next Start assembles with
//	v.KeepLeg(0)              // the operator's forcing choice, for the next Start only
//	err := v.Start(ctx)       // resources.Agent
//	st, _ := v.Status()
//	err = v.Stop(ctx)
package volume
