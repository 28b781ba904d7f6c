package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/semaphore"
)

// smallPayload: requests up to this size are bounded by the in-flight
// slots alone, larger ones also by the byte budget.
const smallPayload = 64 << 10

// maxDiscard is how much refused write payload the server reads and throws
// away to stay in step with a client; beyond it the client is dropped.
const maxDiscard = 64 << 20

// conn is one client connection in the transmission phase.
//
// One goroutine (transmit) reads requests, so they are decoded strictly in
// order; a bounded pool of workers serves them concurrently; replies are
// written whole under wmu, so they never interleave. The last writer to
// leave flushes, so replies that finish together go out in one syscall.
type conn struct {
	s  *Server
	nc net.Conn
	br *bufio.Reader

	wmu      sync.Mutex
	bw       *bufio.Writer
	werr     error        // sticky write error
	deferred int          // replies buffered since the last flush (wmu)
	wfailed  atomic.Bool  // werr is set (read without wmu)
	pending  atomic.Int32 // replies waiting for wmu or being written

	sem      chan struct{}       // one token per request in flight
	budget   *semaphore.Weighted // payload bytes buffered by requests in flight
	work     chan *job           // hands requests to idle workers
	workers  int                 // started workers (transmit goroutine only)
	workerWG sync.WaitGroup

	stopping atomic.Bool  // Shutdown: read no more requests
	latency  atomic.Int64 // moving average of backend service time, ns
	sess     session
	lim      limits

	async    AsyncBackend // the backend, when it can start I/O (else nil)
	ajobs    sync.Pool    // *ajob for reuse
	starting atomic.Int64 // gen of the reader inside an AsyncBackend call, or -1
	finished chan error   // the last reader's end of the connection
}

// job is one request being served.
type job struct {
	req    Request
	buf    []byte // write payload (from the pool), nil otherwise
	weight int64  // bytes held in conn.budget
	inline bool   // served by the reading goroutine itself
}

// inlineLatency is the backend service time under which the reading
// goroutine serves READ and WRITE itself instead of handing them to a
// worker: handing off costs more than a fast backend (tmpfs, page cache)
// takes, while a slow one (iSCSI, a stalling leg) needs the concurrency.
const inlineLatency = 40 * time.Microsecond

// inlineOK decides whether r is served inline: small reads and writes while
// the backend has recently been fast. FLUSH and zeroing always go to a
// worker, they may take long.
func (c *conn) inlineOK(r Request) bool {
	if r.Type != CmdRead && r.Type != CmdWrite || r.Length > 256<<10 {
		return false
	}
	return time.Duration(c.latency.Load()) < inlineLatency
}

// observe folds one backend call's duration into the latency average.
func (c *conn) observe(d time.Duration) {
	old := c.latency.Load()
	c.latency.Store(old - old/8 + int64(d)/8)
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		s:      s,
		nc:     nc,
		br:     bufio.NewReaderSize(nc, 128<<10),
		bw:     bufio.NewWriterSize(nc, 128<<10),
		sem:    make(chan struct{}, s.opts.MaxInFlight),
		budget: semaphore.NewWeighted(int64(s.opts.MaxBuffered)),
		work:   make(chan *job),
	}
	c.async, _ = s.backend.(AsyncBackend)
	// Assume a slow backend until it proves fast: a first request that
	// stalls must not keep the connection from reading the next ones.
	c.latency.Store(int64(time.Millisecond))
	return c
}

// stopReading makes transmit stop after the request it is reading (used by
// Shutdown); requests already read are still served and answered.
func (c *conn) stopReading() {
	c.stopping.Store(true)
	c.nc.SetReadDeadline(time.Now())
}

// transmit is the transmission phase: it returns when the client
// disconnects (nil for NBD_CMD_DISC or a drained shutdown) or breaks the
// protocol (the error says how). It waits for every request already read.
//
// Requests are read by one goroutine at a time. With an AsyncBackend that
// goroutine starts READ and WRITE itself, and the backend may run fast I/O
// on it; if the backend reports that goroutine stuck in a call that will
// not return (a hung leg), a new goroutine takes over reading (takeover),
// so the connection carries on.
func (c *conn) transmit(sess session) error {
	c.sess = sess
	c.lim = limits{
		size:       uint64(c.s.backend.Size()),
		minBlock:   uint32(c.s.backend.BlockSize()),
		maxPayload: uint32(c.s.opts.MaxPayload),
		readOnly:   c.s.opts.ReadOnly,
		structured: sess.structured,
	}
	c.finished = make(chan error, 1)
	c.starting.Store(-1)
	go c.readLoop(0)
	err := <-c.finished
	close(c.work)
	c.workerWG.Wait()
	for range cap(c.sem) { // every request in flight answered
		c.sem <- struct{}{}
	}
	c.wmu.Lock()
	if c.werr == nil {
		c.flushLocked()
	}
	c.wmu.Unlock()
	return err
}

// errReplaced ends a reading goroutine another one took over from.
var errReplaced = errors.New("nbd: reader replaced")

// readLoop reads requests as reader gen until the connection ends or a
// takeover replaces it.
func (c *conn) readLoop(gen int64) {
	c.flushOut() // replies a stuck predecessor left buffered
	if err := c.readRequests(gen); err != errReplaced {
		c.finished <- err
	}
}

func (c *conn) readRequests(gen int64) error {
	lim := c.lim
	var hdr [requestSize]byte
	for {
		if c.br.Buffered() < requestSize {
			// About to wait for the client: send the replies batched
			// while requests were pouring in.
			c.flushOut()
		}
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			if c.stopping.Load() {
				return nil
			}
			if isEOF(err) {
				return fmt.Errorf("nbd: client hung up without NBD_CMD_DISC: %w", err)
			}
			return fmt.Errorf("nbd: reading request: %w", err)
		}
		req, err := DecodeRequest(hdr[:])
		if err != nil {
			return err
		}
		if req.Type == CmdDisc {
			return nil
		}
		v := lim.validate(req)
		async := v.errno == 0 && c.async != nil && (req.Type == CmdRead || req.Type == CmdWrite)
		// Requests served inline hold no slot: the reading goroutine is
		// busy with them, so they add nothing to what is in flight. Small
		// payloads are bounded by the slots alone (MaxInFlight x 64 KiB);
		// larger ones also take their size from the byte budget.
		inline := v.errno == 0 && !async && c.inlineOK(req)
		weight := int64(0)
		if v.errno == 0 && !inline {
			if (req.Type == CmdRead || req.Type == CmdWrite) && req.Length > smallPayload {
				weight = int64(req.Length)
			}
			c.sem <- struct{}{}
			c.budget.Acquire(context.Background(), weight)
		}
		var buf []byte
		if req.Type == CmdWrite {
			if v.errno != 0 {
				if req.Length > maxDiscard {
					return fmt.Errorf("nbd: refusing a %d-byte write payload (%s)", req.Length, v.reason)
				}
				if _, err := io.CopyN(io.Discard, c.br, int64(req.Length)); err != nil {
					return fmt.Errorf("nbd: reading refused write payload: %w", err)
				}
			} else {
				buf = c.s.pool.get(int(req.Length))
				if _, err := io.ReadFull(c.br, buf); err != nil {
					c.s.pool.put(buf)
					if !inline {
						c.budget.Release(weight)
						<-c.sem
					}
					return fmt.Errorf("nbd: reading write payload: %w", err)
				}
			}
		}
		switch {
		case v.errno != 0:
			c.replyError(req, v.errno, v.reason)
			continue
		case async:
			if !c.start(req, buf, weight, gen) {
				return errReplaced
			}
		case inline:
			j := job{req: req, buf: buf, inline: true}
			c.serve(&j)
		default:
			c.dispatch(&job{req: req, buf: buf, weight: weight})
		}
		if c.wfailed.Load() {
			return fmt.Errorf("nbd: writing replies: %w", c.writeErr())
		}
	}
}

// dispatch hands j to an idle worker, starting one when none is idle (there
// are never more workers than MaxInFlight).
func (c *conn) dispatch(j *job) {
	select {
	case c.work <- j:
		return
	default:
	}
	if c.workers < cap(c.sem) {
		c.workers++
		c.workerWG.Add(1)
		go c.worker(j)
		return
	}
	c.work <- j
}

func (j *job) flushMode() flushMode {
	if j.inline {
		return readerFlushes
	}
	return flushNow
}

func (c *conn) worker(first *job) {
	defer c.workerWG.Done()
	c.serve(first)
	for j := range c.work {
		c.serve(j)
	}
}

// serve executes one validated request and sends its reply.
func (c *conn) serve(j *job) {
	if !j.inline {
		defer func() {
			c.budget.Release(j.weight)
			<-c.sem
		}()
	}
	b := c.s.backend
	r := j.req
	off, n := int64(r.Offset), int64(r.Length)
	fua := r.Flags&CmdFlagFUA != 0
	var err error
	switch r.Type {
	case CmdRead:
		buf := c.s.pool.get(int(n))
		t0 := time.Now()
		err = b.ReadAt(buf, off)
		c.observe(time.Since(t0))
		if err == nil {
			c.replyData(r, buf, j.flushMode())
			c.s.pool.put(buf)
			return
		}
		c.s.pool.put(buf)
	case CmdWrite:
		t0 := time.Now()
		err = b.WriteAt(j.buf, off, fua)
		c.observe(time.Since(t0))
		c.s.pool.put(j.buf)
	case CmdFlush:
		err = b.Flush()
	case CmdTrim:
		// TRIM is advisory: only whole blocks inside the range are
		// zeroed (on both legs, so they stay identical).
		bs := int64(b.BlockSize())
		start := (off + bs - 1) / bs * bs
		end := (off + n) / bs * bs
		if end > start {
			err = b.Zero(start, end-start, true)
		}
		if err == nil && fua {
			err = b.Flush()
		}
	case CmdWriteZeroes:
		err = b.Zero(off, n, r.Flags&CmdFlagNoHole == 0)
		if err == nil && fua {
			err = b.Flush()
		}
	}
	if err != nil {
		c.s.opts.Logger.Warn("nbd request failed", "cmd", r.Type, "offset", off, "length", n, "err", err)
		c.replyError(r, errnoFor(err), err.Error())
		return
	}
	c.replyOK(r, j.flushMode())
}

// errnoFor maps a backend error to the protocol's error values.
func errnoFor(err error) uint32 {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return ENOSPC
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		return EPERM
	case errors.Is(err, syscall.EINVAL):
		return EINVAL
	case errors.Is(err, syscall.ESHUTDOWN):
		return ESHUTDOWN
	}
	return EIO
}

// send writes one whole reply (header and optional data) under wmu. The
// writer that leaves pending at zero flushes, batching concurrent replies;
// with later set the reading goroutine flushes before it next waits.
func (c *conn) send(hdr, data []byte, later flushMode) {
	c.pending.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	last := c.pending.Add(-1) == 0
	if c.werr != nil {
		return
	}
	var err error
	if len(data) >= c.bw.Available() {
		// Large payload: one writev of what is buffered, the header and
		// the data, without copying the data.
		bufs := net.Buffers{}
		if c.bw.Buffered() > 0 {
			if err = c.flushLocked(); err != nil {
				c.fail(err)
				return
			}
		}
		bufs = append(bufs, hdr, data)
		_, err = bufs.WriteTo(c.nc)
	} else {
		c.bw.Write(hdr)
		c.bw.Write(data)
		c.deferred++
		if last && !(later == readerFlushes || later == unlessReading && c.starting.Load() >= 0 && c.deferred < replyBatch) {
			err = c.flushLocked()
		}
	}
	if err != nil {
		c.fail(err)
	}
}

// flushLocked sends the buffered replies (wmu held).
func (c *conn) flushLocked() error {
	c.deferred = 0
	return c.bw.Flush()
}

// fail records a write error and closes the connection so the reader stops.
func (c *conn) fail(err error) {
	c.werr = err
	c.wfailed.Store(true)
	c.nc.Close()
}

// flushOut sends whatever replies are buffered.
func (c *conn) flushOut() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr == nil && c.bw.Buffered() > 0 {
		if err := c.flushLocked(); err != nil {
			c.fail(err)
		}
	}
}

func (c *conn) writeErr() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.werr
}

// replyBatch is how many replies a reader inside the backend may leave
// buffered: sending them in small batches keeps the client busy while the
// server works (measured: 4 beats both one syscall per reply and one per
// batch of requests read).
const replyBatch = 4

// flushMode says who sends a reply buffered by send.
type flushMode int

const (
	flushNow      flushMode = iota // the last writer flushes
	readerFlushes                  // the reading goroutine will, before it next waits
	// unlessReading: a reading goroutine inside an AsyncBackend call will
	// (up to replyBatch replies: then the client gets them at once, so it
	// works on them while the server goes on)
	// (it flushes before it next waits); with none, as flushNow. Checked
	// under wmu, against the reader's starting mark it clears before
	// flushing, so a reply is never left behind.
	unlessReading
)

func (c *conn) replyOK(r Request, later flushMode) {
	var h [16]byte
	c.replyOKIn(h[:0], r, later)
}

// replyOKIn is replyOK building the header in scratch (at least 16 bytes
// of capacity; a long-lived one spares an allocation per reply).
func (c *conn) replyOKIn(scratch []byte, r Request, later flushMode) {
	c.send(appendSimpleReply(scratch[:0], 0, r.Handle), nil, later)
}

func (c *conn) replyData(r Request, data []byte, later flushMode) {
	var h [28]byte
	c.replyDataIn(h[:0], r, data, later)
}

// replyDataIn is replyData building the header in scratch (at least 28
// bytes of capacity).
func (c *conn) replyDataIn(scratch []byte, r Request, data []byte, later flushMode) {
	if c.sess.structured {
		b := appendChunkHeader(scratch[:0], replyFlagDone, replyTypeOffsetData, r.Handle, uint32(8+len(data)))
		b = append(b, byte(r.Offset>>56), byte(r.Offset>>48), byte(r.Offset>>40), byte(r.Offset>>32),
			byte(r.Offset>>24), byte(r.Offset>>16), byte(r.Offset>>8), byte(r.Offset))
		c.send(b, data, later)
		return
	}
	c.send(appendSimpleReply(scratch[:0], 0, r.Handle), data, later)
}

// replyError answers r with errno: a structured error chunk carrying the
// reason when structured replies were negotiated, a simple reply otherwise.
func (c *conn) replyError(r Request, errno uint32, reason string) {
	if c.sess.structured {
		c.send(appendErrorChunk(nil, r.Handle, errno, reason), nil, flushNow)
		return
	}
	var h [16]byte
	c.send(appendSimpleReply(h[:0], errno, r.Handle), nil, flushNow)
}
