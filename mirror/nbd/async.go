package nbd

// AsyncBackend is a Backend that can start reads and writes without
// blocking the goroutine that reads requests. The server uses it when the
// backend implements it.
type AsyncBackend interface {
	Backend
	// StartReadAt reads len(p) bytes at off and calls done exactly once,
	// possibly before it returns, possibly from another goroutine. data is
	// p, or another buffer when held and err is nil. held: p is still in
	// use by a call that did not answer and must not be reused (also when
	// the read failed). stuck: the goroutine that called StartReadAt is
	// blocked in that call and may never return.
	StartReadAt(p []byte, off int64, done func(data []byte, err error, held, stuck bool))
	// StartWriteAt is StartReadAt for a write (with fua, durable when done
	// reports success).
	StartWriteAt(p []byte, off int64, fua bool, done func(err error, held, stuck bool))
}

// ajob is a READ or WRITE started on an AsyncBackend.
type ajob struct {
	c      *conn
	req    Request
	buf    []byte                                         // write payload or read buffer (from the pool)
	weight int64                                          // bytes held in conn.budget
	gen    int64                                          // the reader that started it
	rdone  func(data []byte, err error, held, stuck bool) // ajob.readDone, bound once
	wdone  func(err error, held, stuck bool)              // ajob.writeDone, bound once
	hdr    [32]byte                                       // the reply's header
}

// start starts req on the AsyncBackend as reader gen. It reports false
// when a takeover replaced this reader while it was inside the backend.
func (c *conn) start(req Request, buf []byte, weight int64, gen int64) bool {
	j, _ := c.ajobs.Get().(*ajob)
	if j == nil {
		j = &ajob{c: c}
		j.rdone, j.wdone = j.readDone, j.writeDone
	}
	j.req, j.buf, j.weight, j.gen = req, buf, weight, gen
	c.starting.Store(gen)
	if req.Type == CmdRead {
		j.buf = c.s.pool.get(int(req.Length))
		c.async.StartReadAt(j.buf, int64(req.Offset), j.rdone)
	} else {
		c.async.StartWriteAt(buf, int64(req.Offset), req.Flags&CmdFlagFUA != 0, j.wdone)
	}
	return c.starting.CompareAndSwap(gen, -1)
}

func (j *ajob) readDone(data []byte, err error, held, stuck bool) {
	if !j.failed(err) {
		j.c.replyDataIn(j.hdr[:0], j.req, data, replyMode(stuck))
	}
	j.end(held, stuck)
}

func (j *ajob) writeDone(err error, held, stuck bool) {
	if !j.failed(err) {
		j.c.replyOKIn(j.hdr[:0], j.req, replyMode(stuck))
	}
	j.end(held, stuck)
}

// failed logs and answers the request when err is set.
func (j *ajob) failed(err error) bool {
	if err == nil {
		return false
	}
	c, r := j.c, j.req
	c.s.opts.Logger.Warn("nbd request failed", "cmd", r.Type, "offset", r.Offset, "length", r.Length, "err", err)
	c.replyError(r, errnoFor(err), err.Error())
	return true
}

// replyMode: a completion's reply waits for a reader inside the backend,
// unless that reader is the one reported stuck.
func replyMode(stuck bool) flushMode {
	if stuck {
		return flushNow
	}
	return unlessReading
}

// end releases what the request held; a buffer still in use by a hung
// call is dropped, and a stuck reader is replaced.
func (j *ajob) end(held, stuck bool) {
	c := j.c
	if !held {
		c.s.pool.put(j.buf)
	}
	c.budget.Release(j.weight)
	gen := j.gen
	if !stuck {
		j.buf = nil
		c.ajobs.Put(j)
	}
	<-c.sem
	if stuck && c.starting.CompareAndSwap(gen, -1) {
		go c.readLoop(gen + 1)
	}
}
