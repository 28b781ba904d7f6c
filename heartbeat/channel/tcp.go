package channel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hamirror/hamirror/heartbeat"
)

// Link is one private NIC towards one peer: dial Remote from Local.
type Link struct {
	Medium string // "nic1"
	Local  string // this node's address on that NIC (bound before dialling)
	Remote string // the peer's host:port on that NIC
}

// TCPConfig configures the TCP transport.
type TCPConfig struct {
	Listen []string                    // host:port on each of this node's private NICs
	Peers  map[heartbeat.NodeID][]Link // in failover order
	// DialTimeout bounds one connection attempt on one link (default 1s:
	// a private link answers in microseconds; a cut one never).
	DialTimeout time.Duration
	// UserTimeout is TCP_USER_TIMEOUT: unacknowledged data older than this
	// breaks the connection, so a cut cable is noticed within it rather
	// than after the kernel's ~15 minutes (default 3s).
	UserTimeout time.Duration
}

// TCPConfigFrom derives the transport's config for cfg.Self from the
// heartbeat's nodes[].links on port: one listener per private NIC, and per
// peer the NICs both nodes share, in this node's configured order. The
// serial line is never used.
func TCPConfigFrom(cfg heartbeat.Config, port int) TCPConfig {
	tc := TCPConfig{Peers: map[heartbeat.NodeID][]Link{}}
	self, _ := cfg.NodeByID(cfg.Self)
	p := strconv.Itoa(port)
	for _, l := range self.Links {
		tc.Listen = append(tc.Listen, net.JoinHostPort(l.Address, p))
	}
	for _, n := range cfg.Nodes {
		if n.ID == cfg.Self {
			continue
		}
		for _, mine := range self.Links {
			for _, theirs := range n.Links {
				if theirs.Medium == mine.Medium {
					tc.Peers[n.ID] = append(tc.Peers[n.ID], Link{Medium: mine.Medium, Local: mine.Address, Remote: net.JoinHostPort(theirs.Address, p)})
				}
			}
		}
	}
	return tc
}

type tcpTransport struct {
	cfg    TCPConfig
	lns    []net.Listener
	in     chan net.Conn
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu   sync.Mutex
	good map[heartbeat.NodeID]int // index of the link that worked last
}

// NewTCP listens on every configured address and returns the transport.
func NewTCP(cfg TCPConfig) (Transport, error) {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.UserTimeout <= 0 {
		cfg.UserTimeout = 3 * time.Second
	}
	t := &tcpTransport{cfg: cfg, in: make(chan net.Conn), closed: make(chan struct{}), good: map[heartbeat.NodeID]int{}}
	lc := net.ListenConfig{Control: t.control}
	for _, a := range cfg.Listen {
		ln, err := lc.Listen(context.Background(), "tcp", a)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("channel: listening on %s: %w", a, err)
		}
		t.lns = append(t.lns, ln)
		t.wg.Add(1)
		go t.accept(ln)
	}
	return t, nil
}

func (t *tcpTransport) control(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(t.cfg.UserTimeout/time.Millisecond))
	})
	if err != nil {
		return err
	}
	return serr
}

func (t *tcpTransport) keepalive() net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: t.cfg.UserTimeout / 3, Interval: t.cfg.UserTimeout / 3, Count: 3}
}

func (t *tcpTransport) accept(ln net.Listener) {
	defer t.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-t.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetKeepAliveConfig(t.keepalive())
		}
		select {
		case t.in <- c:
		case <-t.closed:
			c.Close()
			return
		}
	}
}

func (t *tcpTransport) Accept() (net.Conn, error) {
	select {
	case c := <-t.in:
		return c, nil
	case <-t.closed:
		return nil, ErrClosed
	}
}

// Dial tries the link that worked last, then the others in order. Each
// attempt gets at most DialTimeout and at most its share of what is left
// of ctx's deadline, so that a silent link (a cut cable swallows the SYN)
// never uses up the time of the links after it; a link that failed is
// tried last next time.
func (t *tcpTransport) Dial(ctx context.Context, to heartbeat.NodeID) (net.Conn, error) {
	links := t.cfg.Peers[to]
	if len(links) == 0 {
		return nil, fmt.Errorf("%w: %s shares no private link with this node", ErrUnreachable, to)
	}
	t.mu.Lock()
	first := t.good[to]
	t.mu.Unlock()
	var errs []error
	for k := range links {
		i := (first + k) % len(links)
		l := links[i]
		timeout := t.cfg.DialTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl)/time.Duration(len(links)-k))
		}
		d := net.Dialer{Timeout: timeout, Control: t.control, KeepAliveConfig: t.keepalive()}
		if l.Local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(l.Local)}
		}
		c, err := d.DialContext(ctx, "tcp", l.Remote)
		if err == nil {
			t.mu.Lock()
			t.good[to] = i
			t.mu.Unlock()
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", l.Medium, err))
		if k == 0 && len(links) > 1 {
			t.mu.Lock()
			if t.good[to] == i {
				t.good[to] = (i + 1) % len(links)
			}
			t.mu.Unlock()
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, to, errors.Join(errs...))
}

func (t *tcpTransport) Close() error {
	t.once.Do(func() {
		close(t.closed)
		for _, ln := range t.lns {
			ln.Close()
		}
	})
	t.wg.Wait()
	return nil
}
