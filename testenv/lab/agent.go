package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hamirror/hamirror/testenv/lab/agentproto"
)

// Result is the outcome of a command run in a VM.
type Result struct {
	Exit   int // exit code; -1 if the command could not start or was killed
	Stdout string
	Stderr string
	Error  string // why the command did not run to its end, if it did not
}

// Output is stdout followed by stderr, for messages.
func (r Result) Output() string { return r.Stdout + r.Stderr }

// Err is nil for exit code 0, else an error quoting the output.
func (r Result) Err() error {
	if r.Exit == 0 {
		return nil
	}
	return fmt.Errorf("exit %d %s\nstdout:\n%s\nstderr:\n%s", r.Exit, r.Error, r.Stdout, r.Stderr)
}

// agentClient talks to labagent over the QEMU unix socket of the VM's
// virtio-serial port. Calls may run concurrently; replies are matched by id.
type agentClient struct {
	conn net.Conn
	wmu  sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	waiting map[uint64]chan agentproto.Result
	pongs   chan uint64
	err     error // set when the reader stops
}

func dialAgent(path string) (*agentClient, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	c := &agentClient{conn: conn, waiting: map[uint64]chan agentproto.Result{}, pongs: make(chan uint64, 16)}
	go c.read()
	return c, nil
}

func (c *agentClient) read() {
	r := bufio.NewReaderSize(c.conn, 1<<20)
	for {
		typ, p, err := agentproto.ReadFrame(r)
		if err != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("agent channel closed: %w", err)
			for id, ch := range c.waiting {
				close(ch)
				delete(c.waiting, id)
			}
			c.mu.Unlock()
			return
		}
		switch typ {
		case agentproto.TypePong:
			var ping agentproto.Ping
			if agentproto.Decode(p, &ping) == nil {
				select {
				case c.pongs <- ping.Nonce:
				default:
				}
			}
		case agentproto.TypeResult:
			var res agentproto.Result
			if agentproto.Decode(p, &res) != nil {
				continue
			}
			c.mu.Lock()
			ch := c.waiting[res.ID]
			delete(c.waiting, res.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- res
			}
		}
	}
}

func (c *agentClient) send(typ byte, v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return agentproto.NewWriter(c.conn).Write(typ, v)
}

// ping sends pings every interval until one is answered or ctx ends.
func (c *agentClient) ping(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for nonce := uint64(1); ; nonce++ {
		if err := c.send(agentproto.TypePing, agentproto.Ping{Nonce: nonce}); err != nil {
			return err
		}
		select {
		case <-c.pongs:
			return nil
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// call sends a request with a fresh id (set by setID) and waits for its Result.
func (c *agentClient) call(ctx context.Context, typ byte, setID func(uint64) any) (agentproto.Result, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return agentproto.Result{}, c.err
	}
	c.nextID++
	id := c.nextID
	ch := make(chan agentproto.Result, 1)
	c.waiting[id] = ch
	c.mu.Unlock()
	if err := c.send(typ, setID(id)); err != nil {
		return agentproto.Result{}, fmt.Errorf("sending to agent: %w", err)
	}
	select {
	case res, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			return agentproto.Result{}, err
		}
		return res, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return agentproto.Result{}, fmt.Errorf("waiting for the VM's answer: %w", ctx.Err())
	}
}

func (c *agentClient) close() error {
	if c == nil {
		return errors.New("no agent connection")
	}
	return c.conn.Close()
}
