package channel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// Config is one node's channel.
type Config struct {
	Cluster string
	Self    heartbeat.NodeID
	Key     []byte             // the cluster key; the channel derives its own (ChannelKey)
	Nodes   []heartbeat.NodeID // who may connect
	// CallTimeout bounds a Call whose context has no deadline (default 5s).
	CallTimeout time.Duration
	// HandshakeTimeout bounds a handshake (default 2s).
	HandshakeTimeout time.Duration
	// Logf reports refused connections and messages (default: discard).
	Logf func(format string, args ...any)
}

// Counters count what the channel refused. None of it was acted on.
type Counters struct {
	BadAuth   uint64 `json:"bad_auth"`  // handshake or message failed authentication: forged, or another key
	Replayed  uint64 `json:"replayed"`  // authentic message out of sequence
	Malformed uint64 `json:"malformed"` // failed strict decoding
	BadPeer   uint64 `json:"bad_peer"`  // unknown node, wrong cluster, or not the node dialled
	Accepted  uint64 `json:"accepted"`  // authenticated connections
}

// Handler answers one request from node from. Handlers must be
// idempotent: a call that lost its connection is retried once.
type Handler func(from heartbeat.NodeID, body []byte) ([]byte, error)

// Channel is a node's end of the authenticated channel.
type Channel struct {
	cfg Config
	hs  hsConfig
	tr  Transport

	bad struct{ auth, replay, malformed, peer, accepted atomic.Uint64 }

	hmu      sync.RWMutex
	handlers map[string]Handler

	pmu  sync.Mutex
	pool map[heartbeat.NodeID][]*Conn

	smu    sync.Mutex
	served map[*Conn]bool
}

// New returns a channel over tr. Call Serve to answer peers.
func New(cfg Config, tr Transport) *Channel {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 2 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	nodes := slices.Clone(cfg.Nodes)
	c := &Channel{cfg: cfg, tr: tr, handlers: map[string]Handler{}, pool: map[heartbeat.NodeID][]*Conn{}, served: map[*Conn]bool{}}
	c.hs = hsConfig{cluster: cfg.Cluster, self: cfg.Self, key: ChannelKey(cfg.Key, cfg.Cluster),
		known: func(id heartbeat.NodeID) bool { return slices.Contains(nodes, id) }, timeout: cfg.HandshakeTimeout}
	return c
}

// Self is this node.
func (c *Channel) Self() heartbeat.NodeID { return c.cfg.Self }

// Counters returns the refusal counters.
func (c *Channel) Counters() Counters {
	return Counters{BadAuth: c.bad.auth.Load(), Replayed: c.bad.replay.Load(), Malformed: c.bad.malformed.Load(),
		BadPeer: c.bad.peer.Load(), Accepted: c.bad.accepted.Load()}
}

// count classifies a refusal; other errors (a closed stream) are not counted.
func (c *Channel) count(err error) {
	switch {
	case errors.Is(err, ErrAuth):
		c.bad.auth.Add(1)
	case errors.Is(err, ErrReplay):
		c.bad.replay.Add(1)
	case errors.Is(err, ErrMalformed):
		c.bad.malformed.Add(1)
	case errors.Is(err, ErrPeer):
		c.bad.peer.Add(1)
	default:
		return
	}
	c.cfg.Logf("channel %s: refused: %v", c.cfg.Self, err)
}

// Dial opens an authenticated connection to node to.
func (c *Channel) Dial(ctx context.Context, to heartbeat.NodeID) (*Conn, error) {
	raw, err := c.tr.Dial(ctx, to)
	if err != nil {
		return nil, err
	}
	conn, err := clientHandshake(raw, c.hs, to)
	if err != nil {
		raw.Close()
		c.count(err)
		return nil, err
	}
	conn.onBad = c.count
	return conn, nil
}

// handshake authenticates one inbound stream; refusals are counted.
func (c *Channel) handshake(raw net.Conn) (*Conn, error) {
	conn, err := serverHandshake(raw, c.hs)
	if err != nil {
		raw.Close()
		c.count(err)
		return nil, err
	}
	c.bad.accepted.Add(1)
	conn.onBad = c.count
	return conn, nil
}

// Handle registers fn for requests named op.
func (c *Channel) Handle(op string, fn Handler) {
	c.hmu.Lock()
	c.handlers[op] = fn
	c.hmu.Unlock()
}

// Serve answers requests until ctx ends; then it closes the transport and
// every connection.
func (c *Channel) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		c.tr.Close()
		c.smu.Lock()
		for k := range c.served {
			k.Close()
		}
		c.smu.Unlock()
		c.pmu.Lock()
		for _, cs := range c.pool {
			for _, k := range cs {
				k.Close()
			}
		}
		c.pool = map[heartbeat.NodeID][]*Conn{}
		c.pmu.Unlock()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		raw, err := c.tr.Accept()
		if err != nil {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() { // a slow or hostile handshake never holds up the others
			defer wg.Done()
			conn, err := c.handshake(raw)
			if err != nil {
				return
			}
			c.smu.Lock()
			if ctx.Err() != nil {
				c.smu.Unlock()
				conn.Close()
				return
			}
			c.served[conn] = true
			c.smu.Unlock()
			c.serveConn(conn)
			c.smu.Lock()
			delete(c.served, conn)
			c.smu.Unlock()
		}()
	}
}

func (c *Channel) serveConn(conn *Conn) {
	defer conn.Close()
	for {
		msg, err := conn.Recv()
		if err != nil {
			return
		}
		op, body, err := parseRequest(msg)
		if err != nil {
			c.count(err)
			return
		}
		c.hmu.RLock()
		h := c.handlers[op]
		c.hmu.RUnlock()
		var reply []byte
		if h == nil {
			err = fmt.Errorf("no handler for %q on %s", op, c.cfg.Self)
		} else {
			reply, err = h(conn.Peer(), body)
		}
		if err := conn.Send(marshalResponse(reply, err)); err != nil {
			return
		}
	}
}

// RemoteError is an error returned by the peer's handler.
type RemoteError struct {
	Node heartbeat.NodeID
	Op   string
	Msg  string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("%s on %s: %s", e.Op, e.Node, e.Msg) }

// Call sends one request to node to and returns the reply. It reuses an
// idle connection when there is one; a reused connection that fails is
// replaced by a fresh one once.
func (c *Channel) Call(ctx context.Context, to heartbeat.NodeID, op string, body []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
		defer cancel()
	}
	req, err := marshalRequest(op, body)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		conn, pooled := c.take(to)
		if conn == nil {
			if conn, err = c.Dial(ctx, to); err != nil {
				return nil, err
			}
		}
		reply, err := c.roundTrip(ctx, conn, req)
		if err == nil {
			c.put(to, conn)
			return parseResponse(to, op, reply)
		}
		conn.Close()
		if !pooled || attempt > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("channel: %s to %s: %w", op, to, err)
		}
	}
}

func (c *Channel) roundTrip(ctx context.Context, conn *Conn, req []byte) ([]byte, error) {
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := conn.Send(req); err != nil {
		return nil, err
	}
	reply, err := conn.Recv()
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return reply, nil
}

func (c *Channel) take(to heartbeat.NodeID) (*Conn, bool) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	cs := c.pool[to]
	if len(cs) == 0 {
		return nil, false
	}
	conn := cs[len(cs)-1]
	c.pool[to] = cs[:len(cs)-1]
	return conn, true
}

func (c *Channel) put(to heartbeat.NodeID, conn *Conn) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if len(c.pool[to]) >= 4 {
		conn.Close()
		return
	}
	c.pool[to] = append(c.pool[to], conn)
}

// Drop closes the idle connections to node to (after its link changed).
func (c *Channel) Drop(to heartbeat.NodeID) {
	c.pmu.Lock()
	cs := c.pool[to]
	delete(c.pool, to)
	c.pmu.Unlock()
	for _, k := range cs {
		k.Close()
	}
}
