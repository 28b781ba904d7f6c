// Package channel is the cluster services' authenticated stream channel:
// messages between nodes over the private links (the heartbeat NICs, never
// the serial line), keyed with the cluster key.
//
// Layers, bottom up:
//   - Transport (transport.go) gives raw byte streams to a node: TCP over
//     each private NIC in configured order, failing over to the next NIC
//     when a dial fails (tcp.go), or an in-memory network whose links tests
//     cut and heal (mem.go). Packets stay the heartbeat's business.
//   - Handshake (handshake.go) authenticates both ends on a raw stream with
//     fresh 32-byte nonces from each side under a key derived from the
//     cluster key (HMAC-SHA256 with the label "hamirror/channel/v1"), and
//     derives per-connection, per-direction AES-256-GCM keys from both
//     nonces: nothing recorded on one connection is valid on another.
//   - Conn (conn.go) carries messages with a strictly increasing sequence
//     number each way; a forged, replayed or reordered message is refused,
//     counted, and ends the connection.
//   - Channel (channel.go, rpc.go) is what services use: Call(ctx, node,
//     op, body) and Handle(op, fn), one request and one reply per call.
//
// Usage:
//
//	tr, err := channel.NewTCP(channel.TCPConfigFrom(cfg, 5406))  // or mem.Endpoint(id)
//	ch := channel.New(channel.Config{Cluster: cfg.Cluster, Self: cfg.Self, Key: key,
//		Nodes: ids}, tr)
//	ch.Handle("log.append", func(from heartbeat.NodeID, body []byte) ([]byte, error) { ... })
//	go ch.Serve(ctx)
//	reply, err := ch.Call(ctx, "node2", "log.append", body)
//	st := ch.Counters()  // refused handshakes and messages, by class
package channel
