package lab

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// seqClient is the failover story's client: from the lab's namespace (the
// public network's client side) it connects to the virtual IP again and
// again and sends the next sequence number to the app (labagent seqd),
// which appends it to a file on the volume, fsyncs and acknowledges. It
// records every acknowledged number and when each answer came, so a test
// measures the outage a client saw and checks that the new owner holds
// every acknowledged number.
type seqClient struct {
	lab    *Lab
	addr   string // VIP:port
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	next  uint64
	acks  []ack
	fails int
	last  string // the last failure, for messages
}

type ack struct {
	n  uint64
	at time.Time
}

// startSeqClient starts the client loop; stop ends it.
func startSeqClient(l *Lab, addr string) *seqClient {
	ctx, cancel := context.WithCancel(context.Background())
	c := &seqClient{lab: l, addr: addr, cancel: cancel, done: make(chan struct{})}
	go c.loop(ctx)
	return c
}

func (c *seqClient) stop() {
	c.cancel()
	<-c.done
}

// loop sends one number per connection (a fresh connection per attempt,
// as a client that reconnects after a failover does), at most every 50 ms.
func (c *seqClient) loop(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil {
		c.mu.Lock()
		c.next++
		n := c.next
		c.mu.Unlock()
		begin := time.Now()
		err := c.send(ctx, n)
		c.mu.Lock()
		if err == nil {
			c.acks = append(c.acks, ack{n, time.Now()})
		} else {
			c.fails++
			c.last = err.Error()
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(50*time.Millisecond - time.Since(begin)):
		}
	}
}

// send is one attempt: connect, send n, wait for "ok n" (1 s in all).
func (c *seqClient) send(ctx context.Context, n uint64) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := c.lab.Dial(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	if _, err := fmt.Fprintf(conn, "%d\n", n); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no answer to %d: %w", n, err)
	}
	if strings.TrimSpace(line) != "ok "+strconv.FormatUint(n, 10) {
		return fmt.Errorf("answer to %d: %q", n, line)
	}
	return nil
}

// acked returns every acknowledged number so far.
func (c *seqClient) acked() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]uint64, len(c.acks))
	for i, a := range c.acks {
		out[i] = a.n
	}
	return out
}

// lastAckBefore is the time of the last acknowledgement before t (zero if none).
func (c *seqClient) lastAckBefore(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last time.Time
	for _, a := range c.acks {
		if a.at.Before(t) {
			last = a.at
		}
	}
	return last
}

// waitAckAfter waits up to d for an acknowledgement later than t and
// returns its time, or an error quoting the last failure.
func (c *seqClient) waitAckAfter(t time.Time, d time.Duration) (time.Time, error) {
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		c.mu.Lock()
		for _, a := range c.acks {
			if a.at.After(t) {
				c.mu.Unlock()
				return a.at, nil
			}
		}
		fails, last := c.fails, c.last
		c.mu.Unlock()
		if time.Now().After(end) {
			return time.Time{}, fmt.Errorf("no acknowledgement through %s within %v (%d failed attempts, the last: %s)", c.addr, d, fails, last)
		}
	}
}

// missing returns the acknowledged numbers that the file content (one
// number a line, as seqd writes it) lacks.
func missing(acked []uint64, content string) []uint64 {
	have := map[uint64]bool{}
	for _, l := range strings.Split(content, "\n") {
		if n, err := strconv.ParseUint(strings.TrimSpace(l), 10, 64); err == nil {
			have[n] = true
		}
	}
	var out []uint64
	for _, n := range acked {
		if !have[n] {
			out = append(out, n)
		}
	}
	return out
}
