// Package mlog is the cluster's management log (R20–R22): one API through
// which every component records what happened, written to the local log
// and to the log of every other node.
//
// An entry has a time, the node that wrote it, that node's sequence
// number (1, 2, 3… without gaps), a level, a component, a message and
// structured fields. Write returns once the entry is durable (fsynced) in
// the local log and, for each peer, in that peer's log, or, when the peer
// cannot be reached within Options.Timeout, in the local spool file for
// that peer. Before the next live delivery to a peer that was unreachable,
// the two nodes exchange: the local spool is appended to the peer's log and
// removed, the peer's spool is appended to the local log and removed, and
// each side sends the entries the other lacks (see exchangeLocked). Every
// append skips an entry (node, sequence) already held; a spool is taken
// only up to a hole (a crash between the log and the spool skips an
// entry there), the sender's log bringing the rest in order; a spool is
// removed only after the other side reported holding its entries, so an
// exchange cut at any point, by a cable or a SIGKILL, is simply run again
// and the logs end with the same entries. A background loop (Run) does the
// same exchange every SyncInterval, so the logs converge while nothing is
// written.
//
// "The peer" with more than two nodes: every other node. An administrator
// expects `mirrorctl log` to show the same history on whichever node is
// left standing, and with three nodes any one of them may be the one;
// writing only to the backup target would leave the history of a node
// split over two others. The exchange also relays: entries of a node that
// is down now reach the nodes that missed them from any node that holds
// them.
//
// Files (Options.Dir, default /var/lib/hamirror/mlog): mlog-G.log
// segments (rotated past MaxSize, Keep kept), spool-PEER.log, and
// high.json (every node's highest sequence when a segment was last
// removed, so that numbers are never reused after rotation). Records
// are length-prefixed and CRC-32C checksummed (record.go); a torn last
// record is cut at open, never parsed.
//
// Usage (the node embeds it through heartbeat/services):
//
//	l, err := mlog.Open(mlog.Options{Dir: dir, Self: "n1", Peers: []heartbeat.NodeID{"n2"}, Net: ch})
//	go l.Run(ctx)
//	l.Info("mirror", "leg failed", "leg", 1, "error", err)          // also to Options.Slog
//	logger := slog.New(l.Handler(slog.Default().Handler(), slog.LevelInfo))
//	res, err := l.Query(mlog.Query{Since: t, Node: "n2"})           // merged, in time order
package mlog
