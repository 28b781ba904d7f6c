package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Backend is the block store the server exports. *mirror.Volume satisfies
// it; tests use a file or memory. It must be safe for concurrent use.
type Backend interface {
	// Size is the export size in bytes (a multiple of BlockSize).
	Size() int64
	// BlockSize is the alignment every offset and length must respect
	// (512 or 4096); the server refuses misaligned requests with EINVAL.
	BlockSize() int
	ReadAt(p []byte, off int64) error
	// WriteAt with fua returns only when the data is durable.
	WriteAt(p []byte, off int64, fua bool) error
	// Flush makes every completed write durable, whichever connection
	// wrote it (that is what makes NBD_FLAG_CAN_MULTI_CONN honest).
	Flush() error
	// Zero makes the range read as zeros; unmap allows deallocation.
	Zero(off, length int64, unmap bool) error
}

// Options configure a Server. The zero value is usable.
type Options struct {
	// ExportName is the name listed by NBD_OPT_LIST; the empty (default)
	// name is always accepted too.
	ExportName string
	// Description is shown by nbdinfo.
	Description string
	// ReadOnly refuses writes with EPERM and advertises NBD_FLAG_READ_ONLY.
	ReadOnly bool
	// MaxPayload is the largest READ or WRITE accepted; default 32 MiB (the
	// largest request the Linux nbd driver sends).
	MaxPayload int
	// MaxInFlight bounds the requests served at once per connection (and
	// so the worker goroutines and buffered payload); default 64.
	MaxInFlight int
	// MaxBuffered bounds the READ/WRITE payload bytes held by one
	// connection's requests in flight; default 2 x MaxPayload.
	MaxBuffered int
	// HandshakeTimeout bounds the negotiation; default 30s.
	HandshakeTimeout time.Duration
	// Logger receives connection events; nil discards.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.MaxPayload <= 0 {
		o.MaxPayload = 32 << 20
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	if o.MaxBuffered < o.MaxPayload {
		o.MaxBuffered = 2 * o.MaxPayload
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server serves one export to any number of connections.
type Server struct {
	backend Backend
	opts    Options
	pool    *bufPool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup // Serve's connection goroutines
	connWG    sync.WaitGroup // every open conn, however it is served
}

// NewServer returns a server for b. It fails when the backend's geometry
// cannot be exported honestly.
func NewServer(b Backend, opts Options) (*Server, error) {
	opts.setDefaults()
	bs := b.BlockSize()
	if bs <= 0 || bs&(bs-1) != 0 || bs > 64<<10 {
		return nil, fmt.Errorf("nbd: backend block size %d is not a power of two up to 64 KiB", bs)
	}
	if b.Size() <= 0 || b.Size()%int64(bs) != 0 {
		return nil, fmt.Errorf("nbd: backend size %d is not a positive multiple of its block size %d", b.Size(), bs)
	}
	if opts.MaxPayload%bs != 0 || opts.MaxPayload < max(bs, 4096) {
		return nil, fmt.Errorf("nbd: MaxPayload %d must be a multiple of the block size %d and at least 4096", opts.MaxPayload, bs)
	}
	if len(opts.ExportName) > maxString || len(opts.Description) > maxString {
		return nil, errors.New("nbd: export name or description longer than 4096 bytes")
	}
	return &Server{
		backend:   b,
		opts:      opts,
		pool:      newBufPool(),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}, nil
}

// Listen opens a listening socket for addr: "unix:PATH" (created with mode
// 0600, a stale socket removed) or "tcp:HOST:PORT". A bare path is a unix
// socket. TCP is only ever opened on the address given.
func Listen(addr string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, "/"):
		path := strings.TrimPrefix(addr, "unix:")
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.DialTimeout("unix", path, 500*time.Millisecond); err == nil {
				c.Close()
				return nil, fmt.Errorf("nbd: socket %s is in use by a running server", path)
			}
			os.Remove(path)
		}
		ln, err := ListenUnix0600(path)
		if err != nil {
			return nil, fmt.Errorf("nbd: listening on %s: %w", path, err)
		}
		return ln, nil
	case strings.HasPrefix(addr, "tcp:"):
		ln, err := net.Listen("tcp", strings.TrimPrefix(addr, "tcp:"))
		if err != nil {
			return nil, fmt.Errorf("nbd: listening on %s: %w", addr, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("nbd: listen address %q: want unix:PATH or tcp:HOST:PORT", addr)
}

// Serve accepts connections on ln until Shutdown or Close, serving each in
// its own goroutine. It returns nil after Shutdown/Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			delete(s.listeners, ln)
			s.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.ServeConn(nc); err != nil {
				s.opts.Logger.Info("nbd client disconnected", "remote", remoteName(nc), "reason", err)
			}
		}()
	}
}

// ServeConn runs the handshake and then the transmission phase on nc until
// the client disconnects, misbehaves, or the server shuts down. nc is closed
// on return. The error says why a connection ended abnormally (nil for a
// clean NBD_CMD_DISC or NBD_OPT_ABORT).
func (s *Server) ServeConn(nc net.Conn) error {
	c, err := s.newConn(nc)
	if err != nil {
		return err
	}
	defer s.dropConn(c)
	nc.SetDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	sess, err := s.handshake(c.br, c.bw)
	if err != nil {
		if errors.Is(err, errAbort) {
			return nil
		}
		return err
	}
	nc.SetDeadline(time.Time{})
	return c.transmit(sess)
}

// ServeTransmission serves nc with the transmission phase only, simple
// replies, no handshake: the Linux kernel's side of a socket pair handed to
// it with NBD CONNECT has already agreed the export out of band.
func (s *Server) ServeTransmission(nc net.Conn) error {
	c, err := s.newConn(nc)
	if err != nil {
		return err
	}
	defer s.dropConn(c)
	return c.transmit(session{flags: s.transmissionFlags(false)})
}

// KernelFlags are the transmission flags to hand the kernel with CONNECT.
func (s *Server) KernelFlags() uint64 { return uint64(s.transmissionFlags(false)) }

func (s *Server) newConn(nc net.Conn) (*conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		nc.Close()
		return nil, errors.New("nbd: server is shutting down")
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	return c, nil
}

func (s *Server) dropConn(c *conn) {
	c.nc.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.connWG.Done()
}

// Shutdown stops accepting, lets every connection finish the requests it
// has already read (their replies are sent), then closes the connections.
// It returns when all are closed or ctx ends (then it closes them hard).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.stopReading()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close closes every listener and connection at once, without draining.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	return nil
}

// Connections is the number of open client connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "unix"
}

// isEOF reports a peer that simply went away.
func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}
