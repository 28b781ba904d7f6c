package halab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/testenv/halab/pgwire"
)

// ClientOptions shape the client loop. The defaults are the same for every
// system measured; change them for all or none.
type ClientOptions struct {
	Addr string // default VIP:5432
	// ConnectTimeout bounds one TCP connect (default 100 ms: a live server
	// answers a SYN in well under a millisecond even on a loaded host; a
	// SYN towards a dead one is not retried by TCP for a second).
	ConnectTimeout time.Duration
	// AttemptTimeout bounds start-up and the INSERT once connected
	// (default 500 ms: a request in flight when the server died gets no
	// answer, so the loop's outage is at least this long whenever the
	// fault catches one; with 1 s, one kill in ten of the fast profile
	// waited for it after the database was back at 0.5 s).
	AttemptTimeout time.Duration
	Interval       time.Duration // pause after a success (default 10 ms)
	Retry          time.Duration // pause after a failure (default 10 ms)
}

func (o *ClientOptions) defaults() {
	if o.Addr == "" {
		o.Addr = net.JoinHostPort(VIP, strconv.Itoa(PGPort))
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 100 * time.Millisecond
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = 500 * time.Millisecond
	}
	if o.Interval == 0 {
		o.Interval = 10 * time.Millisecond
	}
	if o.Retry == 0 {
		o.Retry = 10 * time.Millisecond
	}
}

// Client is the client loop: from the client namespace, again and again,
// connect to the service address, start a session and commit one row
// (INSERT INTO ledger(id) VALUES (N), autocommit) with a fresh N, then
// close. A row counts as committed only when the server acknowledged it;
// an attempt that failed after sending may or may not have committed and
// its N is never reused.
type Client struct {
	lab    *Lab
	opt    ClientOptions
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	attempts []Attempt
	notify   chan struct{}
}

// StartClient starts a client loop until Stop.
func (l *Lab) StartClient(opt ClientOptions) *Client {
	opt.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{lab: l, opt: opt, cancel: cancel, done: make(chan struct{}), notify: make(chan struct{})}
	go c.loop(ctx)
	return c
}

func (c *Client) loop(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil {
		id := c.lab.nextID.Add(1)
		a := Attempt{Start: time.Now(), ID: id}
		a.Err = c.attempt(ctx, id)
		a.End = time.Now()
		if ctx.Err() != nil {
			return // an attempt cut by Stop says nothing about the service
		}
		c.mu.Lock()
		c.attempts = append(c.attempts, a)
		close(c.notify)
		c.notify = make(chan struct{})
		c.mu.Unlock()
		pause := c.opt.Interval
		if a.Err != nil {
			pause = c.opt.Retry
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

func (c *Client) attempt(ctx context.Context, id int64) error {
	conn, err := c.lab.DialClient(ctx, c.opt.Addr, c.opt.ConnectTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	conn.SetDeadline(time.Now().Add(c.opt.AttemptTimeout))
	pc, err := pgwire.Startup(conn, "postgres", "postgres", "")
	if err != nil {
		return err
	}
	res, err := pc.Query(fmt.Sprintf("INSERT INTO %s(id) VALUES (%d)", LedgerTable, id))
	if err != nil {
		return err
	}
	if len(res.Tags) != 1 || res.Tags[0] != "INSERT 0 1" {
		return fmt.Errorf("unexpected reply %q to an INSERT", res.Tags)
	}
	pc.Close()
	return nil
}

// Stop ends the loop and waits for it.
func (c *Client) Stop() {
	c.cancel()
	<-c.done
}

// Attempts returns every finished attempt so far, in order.
func (c *Client) Attempts() []Attempt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.attempts)
}

// Committed returns the IDs of every acknowledged row, in order.
func (c *Client) Committed() []int64 {
	var ids []int64
	for _, a := range c.Attempts() {
		if a.Err == nil {
			ids = append(ids, a.ID)
		}
	}
	return ids
}

// wait blocks until ok holds for the attempts or timeout passes.
func (c *Client) wait(ctx context.Context, timeout time.Duration, ok func([]Attempt) bool) error {
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		as, ch := c.attempts, c.notify
		c.mu.Unlock()
		if ok(as) {
			return nil
		}
		select {
		case <-ch:
		case <-deadline:
			return fmt.Errorf("client: not within %v; last attempt: %s", timeout, describeLast(as))
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return errors.New("client stopped")
		}
	}
}

func describeLast(as []Attempt) string {
	if len(as) == 0 {
		return "none yet"
	}
	a := as[len(as)-1]
	if a.Err == nil {
		return "committed"
	}
	return a.Err.Error()
}

// WaitCommits waits until n rows in a row have committed after since.
func (c *Client) WaitCommits(ctx context.Context, n int, since time.Time, timeout time.Duration) error {
	return c.wait(ctx, timeout, func(as []Attempt) bool {
		run := 0
		for _, a := range as {
			switch {
			case a.Start.Before(since):
			case a.Err == nil:
				run++
			default:
				run = 0
			}
		}
		return run >= n
	})
}

// WaitOutage waits until the client is served again after a fault
// injected from fault to applied (see ComputeOutage) and returns the
// outage; giveUp bounds the wait.
func (c *Client) WaitOutage(ctx context.Context, fault, applied time.Time, giveUp time.Duration) (Outage, error) {
	var o Outage
	err := c.wait(ctx, giveUp, func(as []Attempt) bool {
		var ok bool
		o, ok = ComputeOutage(as, fault, applied)
		return ok
	})
	return o, err
}

// Missing returns the IDs among ids that PostgreSQL at addr (through the
// client namespace) does not hold: acknowledged commits that were lost.
func (l *Lab) Missing(ctx context.Context, addr string, ids []int64) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	lo, hi := slices.Min(ids), slices.Max(ids)
	res, err := l.Query(ctx, addr, fmt.Sprintf("SELECT id FROM %s WHERE id BETWEEN %d AND %d", LedgerTable, lo, hi))
	if err != nil {
		return nil, err
	}
	have := map[int64]bool{}
	for _, r := range res.Rows {
		if len(r) != 1 || r[0] == nil {
			return nil, errors.New("unexpected row shape from the ledger")
		}
		v, err := strconv.ParseInt(strings.TrimSpace(*r[0]), 10, 64)
		if err != nil {
			return nil, err
		}
		have[v] = true
	}
	var missing []int64
	for _, id := range ids {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}
