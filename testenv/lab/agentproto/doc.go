// Package agentproto is the wire format between the QEMU lab (host side) and
// labagent, the small agent inside each lab VM, over a virtio-serial port.
//
// Every message is one frame: the magic "HL", a type byte, a 4-byte
// big-endian payload length (at most MaxPayload) and the payload. Payloads
// are JSON objects decoded strictly (unknown fields are refused).
//
//	w := agentproto.NewWriter(conn)
//	w.Write(agentproto.TypeExec, agentproto.Exec{Argv: []string{"sh", "-c", "uname -r"}})
//	typ, payload, err := agentproto.ReadFrame(r)
//	var res agentproto.Result
//	err = agentproto.Decode(payload, &res)
//
// Serial is the message the lab's serial-line scenario sends inside the
// heartbeat's serial envelope (a sequence number and a CRC-32 of the body).
package agentproto
