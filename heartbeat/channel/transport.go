package channel

import (
	"context"
	"errors"
	"net"

	"github.com/hamirror/hamirror/heartbeat"
)

// Transport gives a node raw byte streams to its peers: like memberlist's
// Transport, but streams only (packets are the heartbeat's). The channel
// authenticates whatever the transport delivers; a transport never needs
// to be trusted.
type Transport interface {
	// Dial opens a stream to node to, over whichever private link works
	// (a transport with several links fails over between them).
	Dial(ctx context.Context, to heartbeat.NodeID) (net.Conn, error)
	// Accept returns the next inbound stream; ErrClosed after Close.
	Accept() (net.Conn, error)
	Close() error
}

// ErrClosed is returned by Accept after Close.
var ErrClosed = errors.New("channel: transport closed")

// ErrUnreachable is returned by Dial when no link reaches the peer.
var ErrUnreachable = errors.New("channel: peer unreachable on every private link")
