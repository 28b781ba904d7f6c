package channel

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/hamirror/hamirror/heartbeat"
)

// MemNetwork is an in-memory network for tests: every node gets an
// endpoint (a Transport), streams are net.Pipe pairs, and the link between
// two nodes can be cut (open streams break at once, dials fail) and
// healed. It stands in for the private NICs where a test needs many
// nodes in one process; the netns tests use the real TCP transport.
type MemNetwork struct {
	mu    sync.Mutex
	eps   map[heartbeat.NodeID]*memEndpoint
	cut   map[[2]heartbeat.NodeID]bool
	conns map[[2]heartbeat.NodeID][]net.Conn
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{eps: map[heartbeat.NodeID]*memEndpoint{}, cut: map[[2]heartbeat.NodeID]bool{},
		conns: map[[2]heartbeat.NodeID][]net.Conn{}}
}

func pair(a, b heartbeat.NodeID) [2]heartbeat.NodeID {
	if b < a {
		a, b = b, a
	}
	return [2]heartbeat.NodeID{a, b}
}

type memEndpoint struct {
	net    *MemNetwork
	id     heartbeat.NodeID
	in     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// Endpoint returns node id's transport (a new one if id has none or its
// last one was closed, as after a restart).
func (n *MemNetwork) Endpoint(id heartbeat.NodeID) Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	ep := &memEndpoint{net: n, id: id, in: make(chan net.Conn, 16), closed: make(chan struct{})}
	n.eps[id] = ep
	return ep
}

// Cut breaks the link between a and b (both directions) or heals it.
func (n *MemNetwork) Cut(a, b heartbeat.NodeID, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := pair(a, b)
	n.cut[p] = cut
	if cut {
		for _, c := range n.conns[p] {
			c.Close()
		}
		delete(n.conns, p)
	}
}

// Isolate cuts (or heals) every link of id.
func (n *MemNetwork) Isolate(id heartbeat.NodeID, cut bool, all []heartbeat.NodeID) {
	for _, o := range all {
		if o != id {
			n.Cut(id, o, cut)
		}
	}
}

func (e *memEndpoint) Dial(ctx context.Context, to heartbeat.NodeID) (net.Conn, error) {
	n := e.net
	n.mu.Lock()
	dst := n.eps[to]
	if n.cut[pair(e.id, to)] || dst == nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, to)
	}
	a, b := net.Pipe()
	p := pair(e.id, to)
	n.conns[p] = append(n.conns[p], a, b)
	n.mu.Unlock()
	select {
	case dst.in <- b:
		return a, nil
	case <-dst.closed:
	case <-ctx.Done():
	}
	a.Close()
	b.Close()
	return nil, fmt.Errorf("%w: %s", ErrUnreachable, to)
}

func (e *memEndpoint) Accept() (net.Conn, error) {
	select {
	case c := <-e.in:
		return c, nil
	case <-e.closed:
		return nil, ErrClosed
	}
}

func (e *memEndpoint) Close() error {
	e.once.Do(func() {
		close(e.closed)
		n := e.net
		n.mu.Lock()
		if n.eps[e.id] == e {
			delete(n.eps, e.id)
		}
		for p, cs := range n.conns {
			if p[0] == e.id || p[1] == e.id {
				for _, c := range cs {
					c.Close()
				}
				delete(n.conns, p)
			}
		}
		n.mu.Unlock()
	})
	return nil
}
