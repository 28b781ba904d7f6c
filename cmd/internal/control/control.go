// Package control is the protocol between mirrorctl and mirrord: one JSON
// request and one JSON response per line over a unix socket (mode 0600).
//
// Server side (mirrord):
//
//	srv, err := control.Listen("unix:/run/hamirror/mirrord.sock")
//	srv.Handle("status", func(args json.RawMessage) (any, error) { return vol.Status(), nil })
//	go srv.Serve()
//	defer srv.Close()
//
// Client side (mirrorctl):
//
//	var st mirror.Status
//	err := control.Call("unix:/run/hamirror/mirrord.sock", "status", nil, &st)
//
// Errors returned by a handler reach the client as *RemoteError with the
// handler's message, so mirrorctl can print exactly what mirrord said.
package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/mirror/nbd"
)

// MaxMessage bounds one request or response line; longer input is refused.
const MaxMessage = 4 << 20

// Request is one call.
type Request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response is the answer to one Request.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// RemoteError is an error reported by mirrord's handler.
type RemoteError struct{ Op, Msg string }

func (e *RemoteError) Error() string { return e.Msg }

// HandlerFunc answers one op. args is the raw JSON of Request.Args (may be nil).
type HandlerFunc func(args json.RawMessage) (any, error)

// Server accepts control connections and dispatches requests by op.
type Server struct {
	ln       net.Listener
	mu       sync.RWMutex
	handlers map[string]HandlerFunc
	wg       sync.WaitGroup
	closed   chan struct{}
}

// ParseAddr splits "unix:PATH" into network and address. A bare path is
// taken as a unix socket.
func ParseAddr(addr string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		return "unix", strings.TrimPrefix(addr, "unix:"), nil
	case strings.HasPrefix(addr, "/"):
		return "unix", addr, nil
	}
	return "", "", fmt.Errorf("control address %q: want unix:PATH", addr)
}

// Listen creates the control socket (removing a stale one) with mode 0600.
func Listen(addr string) (*Server, error) {
	network, path, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// A live daemon answers; a stale socket from a crash does not.
		if c, err := net.DialTimeout(network, path, 500*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s is in use by a running mirrord", path)
		}
		os.Remove(path)
	}
	ln, err := nbd.ListenUnix0600(path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Server{ln: ln, handlers: map[string]HandlerFunc{}, closed: make(chan struct{})}, nil
}

// Handle registers h for op, replacing any earlier handler.
func (s *Server) Handle(op string, h HandlerFunc) {
	s.mu.Lock()
	s.handlers[op] = h
	s.mu.Unlock()
}

// Serve accepts connections until Close. It returns nil after Close.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	enc := json.NewEncoder(c)
	for {
		line, err := readLine(r)
		if err != nil {
			if !errors.Is(err, errTooLong) {
				return
			}
			enc.Encode(Response{Error: err.Error()})
			return
		}
		var req Request
		if err := json.Unmarshal(line, &req); err != nil {
			enc.Encode(Response{Error: "malformed request: " + err.Error()})
			return
		}
		if err := enc.Encode(s.dispatch(req)); err != nil {
			return
		}
	}
}

func (s *Server) dispatch(req Request) (resp Response) {
	s.mu.RLock()
	h := s.handlers[req.Op]
	s.mu.RUnlock()
	if h == nil {
		return Response{Error: fmt.Sprintf("unknown operation %q", req.Op)}
	}
	defer func() {
		if p := recover(); p != nil {
			resp = Response{Error: fmt.Sprintf("internal error in %s: %v", req.Op, p)}
		}
	}()
	res, err := h(req.Args)
	if err != nil {
		return Response{Error: err.Error()}
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return Response{Error: fmt.Sprintf("encoding %s result: %v", req.Op, err)}
	}
	return Response{OK: true, Result: raw}
}

// Close stops accepting, waits for open connections and removes the socket.
func (s *Server) Close() error {
	close(s.closed)
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// Addr is the socket path.
func (s *Server) Addr() string { return s.ln.Addr().String() }

var errTooLong = errors.New("control message too long")

func readLine(r *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		frag, err := r.ReadSlice('\n')
		buf = append(buf, frag...)
		if len(buf) > MaxMessage {
			return nil, errTooLong
		}
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// Call sends one request to the daemon at addr and decodes the result into
// result (which may be nil). A handler's error comes back as *RemoteError.
func Call(addr, op string, args, result any) error {
	network, path, err := ParseAddr(addr)
	if err != nil {
		return err
	}
	c, err := net.DialTimeout(network, path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("cannot reach mirrord at %s (is it running?): %w", path, err)
	}
	defer c.Close()
	req := Request{Op: op}
	if args != nil {
		if req.Args, err = json.Marshal(args); err != nil {
			return err
		}
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return fmt.Errorf("sending %s to mirrord: %w", op, err)
	}
	line, err := readLine(bufio.NewReader(c))
	if err != nil {
		return fmt.Errorf("reading mirrord's answer to %s: %w", op, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("mirrord's answer to %s is malformed: %w", op, err)
	}
	if !resp.OK {
		return &RemoteError{Op: op, Msg: resp.Error}
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return fmt.Errorf("decoding mirrord's answer to %s: %w", op, err)
		}
	}
	return nil
}
