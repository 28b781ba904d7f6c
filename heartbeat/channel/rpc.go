package channel

import (
	"fmt"

	"github.com/hamirror/hamirror/heartbeat"
)

// Request and reply encoding inside a message:
//
//	request: 1 | op (str8, 1..64 bytes) | body
//	reply:   2 | 0 | body            (success)
//	         2 | 1 | error message   (the handler failed)

const (
	kindRequest = 1
	kindReply   = 2
)

func marshalRequest(op string, body []byte) ([]byte, error) {
	if len(op) == 0 || len(op) > maxName {
		return nil, fmt.Errorf("channel: op name %q must be 1 to %d bytes", op, maxName)
	}
	if len(body)+2+len(op) > MaxMessage {
		return nil, fmt.Errorf("channel: %s request of %d bytes exceeds %d", op, len(body), MaxMessage)
	}
	b := make([]byte, 0, 2+len(op)+len(body))
	b = append(b, kindRequest)
	b = appendStr(b, op)
	return append(b, body...), nil
}

func parseRequest(p []byte) (op string, body []byte, err error) {
	r := &reader{p: p}
	k := r.take(1)
	if r.err == nil && k[0] != kindRequest {
		return "", nil, fmt.Errorf("%w: message kind %d, want a request", ErrMalformed, k[0])
	}
	op = r.str()
	if r.err != nil {
		return "", nil, r.err
	}
	return op, r.p, nil
}

func marshalResponse(body []byte, err error) []byte {
	if err != nil {
		msg := err.Error()
		if len(msg) > 4096 {
			msg = msg[:4096]
		}
		return append([]byte{kindReply, 1}, msg...)
	}
	if len(body)+2 > MaxMessage {
		return append([]byte{kindReply, 1}, fmt.Sprintf("reply of %d bytes exceeds the channel's %d", len(body), MaxMessage)...)
	}
	return append([]byte{kindReply, 0}, body...)
}

func parseResponse(from heartbeat.NodeID, op string, p []byte) ([]byte, error) {
	if len(p) < 2 || p[0] != kindReply || p[1] > 1 {
		return nil, fmt.Errorf("%w: reply to %s from %s", ErrMalformed, op, from)
	}
	if p[1] == 1 {
		return nil, &RemoteError{Node: from, Op: op, Msg: string(p[2:])}
	}
	return p[2:], nil
}
