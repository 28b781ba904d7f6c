package iscsi

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// session is one logged-in iSCSI session with a single connection in full
// feature phase. Commands are started from any goroutine (start never
// waits: beyond the CmdSN window or the queue depth they queue in order);
// one reader goroutine receives every PDU, dispatches it by ITT and calls
// each task's ended callback; a watchdog goroutine pings and enforces the
// timeout. A session never reconnects: once it fails, every outstanding,
// queued and later command gets its error, and the Disk builds a new
// session.
//
// PDUs are queued under mu (so they leave in sequence-number order) and
// written in batches by outq: by a sender when the socket is idle, by the
// reader (without blocking) for what its callbacks started, by a helper
// goroutine only when the socket is full. Only the reader completes tasks,
// so a task's read buffer is never written after its owner was told the
// outcome.
type session struct {
	nc      net.Conn
	raw     io.Reader // the connection, for the reader (see sessionReader)
	params  Params
	digests Digests
	live    liveness
	now     func() time.Time
	depth   int

	out   *outq       // coalesced writes to nc
	tpool sync.Pool   // *task, reused so a command allocates little
	wire  net.Buffers // scratch for one PDU's buffers; s.mu is held

	mu        sync.Mutex
	cmdSN     uint32
	win       window
	expStatSN uint32
	nextITT   uint32
	tasks     map[uint32]*task
	err       error         // why the session died (nil while alive)
	recvd     atomic.Uint64 // PDUs received (the reader counts, the watchdog reads)
	lastRecv  time.Time     // when the watchdog last saw recvd move
	seenRecvd uint64        // recvd at that time
	pingITT   uint32
	pingSent  time.Time
	logoutITT uint32
	logout    chan error
	queued    []*task   // started commands waiting for the CmdSN window or a queue slot, in order
	closedAt  time.Time // when the watchdog first saw queued commands behind a closed window
	wokeSync  bool      // the reader woke a blocked exec caller since its last read (reader only)

	stop       chan struct{} // closed when the session fails (s.err set)
	writerDone chan struct{} // closed when writeLoop has returned
	dead       chan struct{} // closed when the reader has exited and all tasks failed
}

// command is one SCSI command to run.
type command struct {
	Op    string // for errors: "READ(16)"
	LUN   uint64
	CDB   []byte
	Read  []byte // Data-In destination (its length is the expected length)
	Write []byte // Data-Out source
	// Ordered sends the command with the ORDERED task attribute.
	Ordered bool
}

// result is how a command ended at the target.
type result struct {
	Response  byte
	Status    byte
	Sense     []byte
	Residual  uint32
	Underflow bool
	Overflow  bool
	Received  int // Data-In bytes placed in Read
}

// task is one command on its way through a session. Whoever starts it
// sets ended, which the session calls exactly once when the command ended
// (res or err set): from the reader goroutine, or from the goroutine that
// fails the session. ended must not block.
type task struct {
	cmd    command
	itt    uint32
	sent   time.Time
	dataSN uint32
	recv   uint32
	ended  func(*task)
	done   chan struct{} // exec's: capacity 1, one send when the task ends
	wakes  bool          // ended wakes a blocked goroutine (see directReader.beforeWait)
	res    result
	err    error
	pdu    PDU // the command PDU, encoded in place
}

// reset clears what one run of t through a session left, keeping its
// command, callback and buffers, so it can be started again.
func (t *task) reset() {
	t.itt, t.sent, t.dataSN, t.recv = 0, time.Time{}, 0, 0
	t.res, t.err = result{}, nil
}

// newSession starts the reader and watchdog on a logged-in connection.
func newSession(nc net.Conn, br *bufio.Reader, p Params, last sn, live liveness, depth int, now func() time.Time) *session {
	s := &session{
		nc: nc, raw: sessionReader(nc, br), params: p,
		digests: Digests{Header: p.HeaderDigest, Data: p.DataDigest},
		live:    live, now: now, depth: depth,
		cmdSN:      last.ExpCmdSN,
		win:        window{exp: last.ExpCmdSN, max: last.MaxCmdSN},
		expStatSN:  last.StatSN + 1,
		nextITT:    1,
		tasks:      map[uint32]*task{},
		dead:       make(chan struct{}),
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
		out:        newOutq(),
	}
	s.lastRecv = now()
	go s.writeLoop()
	go s.readLoop()
	go s.watchdog()
	return s
}

// newITT returns an unused task tag; s.mu is held.
func (s *session) newITT() uint32 {
	for {
		itt := s.nextITT
		s.nextITT++
		if itt == reservedTag || itt == 0 {
			continue
		}
		if _, busy := s.tasks[itt]; busy || itt == s.pingITT || itt == s.logoutITT {
			continue
		}
		return itt
	}
}

// kill records why the session dies (the first reason wins), stops the
// writer and closes the socket; the reader then fails every task.
func (s *session) kill(err error) {
	s.mu.Lock()
	s.failLocked(err)
	s.mu.Unlock()
	s.nc.Close()
}

// failLocked records err as the session's end; s.mu is held.
func (s *session) failLocked(err error) {
	if s.err == nil {
		s.err = err
		close(s.stop)
	}
}

// failure returns the error that killed the session, or nil.
func (s *session) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// enqueue appends one PDU's wire form to the output queue; s.mu is held
// (so PDUs leave in the order their sequence numbers were assigned). It
// reports whether the caller must write the queue (see outq.push).
func (s *session) enqueue(p *PDU, canWrite bool) (bool, error) {
	bufs, err := p.appendBuffers(s.wire[:0], s.digests)
	if err != nil {
		return false, err
	}
	must := s.out.push(bufs, canWrite)
	clear(bufs) // push copied them; drop the references
	s.wire = bufs[:0]
	return must, nil
}

// newTask takes a task from the pool for c (for exec).
func (s *session) newTask(c command) *task {
	t, _ := s.tpool.Get().(*task)
	if t == nil {
		t = &task{done: make(chan struct{}, 1), ended: wakeExec}
	}
	t.cmd = c
	return t
}

// wakeExec is exec's task callback: it wakes the caller blocked in exec.
func wakeExec(t *task) { t.done <- struct{}{} }

// putTask returns a finished task (its caller has read the outcome).
func (s *session) putTask(t *task) {
	done := t.done
	*t = task{done: done, ended: wakeExec}
	s.tpool.Put(t)
}

// exec runs a command and waits for its end. The error is a transport or
// session error; SCSI status is in the result.
func (s *session) exec(c command) (result, error) {
	t := s.newTask(c)
	if err := s.start(t); err != nil {
		s.putTask(t)
		return result{}, err
	}
	<-t.done
	res, err := t.res, t.err
	s.putTask(t)
	return res, err
}

// start sends t's command, or queues it until the CmdSN window and the
// queue depth let it go; it never waits. Once start returned nil, t.ended
// is called exactly once. An error (a dead session, a command that cannot
// be encoded) means t was not started and t.ended will not be called.
func (s *session) start(t *task) error {
	c := &t.cmd
	if len(c.Read) > 0 && len(c.Write) > 0 {
		return fmt.Errorf("iscsi: %s: bidirectional commands are not supported", c.Op)
	}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	if len(s.queued) > 0 || !s.canIssue() {
		s.queued = append(s.queued, t)
		// Normally the reader issues queued commands as the window and
		// the depth free up; issue here too what may go already.
		mustWrite, failed := s.issueQueued()
		s.mu.Unlock()
		for _, f := range failed {
			f.ended(f)
		}
		if mustWrite {
			s.write()
		}
		return nil
	}
	mustWrite, err := s.issue(t)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if mustWrite {
		// A failed write kills the session; the reader then fails the task.
		s.write()
	}
	return nil
}

// canIssue reports whether one more command may go now; s.mu is held.
func (s *session) canIssue() bool {
	return len(s.tasks) < s.depth && s.win.open(s.cmdSN)
}

// issue assigns t its tag and CmdSN and queues its PDUs; s.mu is held.
func (s *session) issue(t *task) (bool, error) {
	t.itt = s.newITT()
	t.sent = s.now()
	s.tasks[t.itt] = t
	mustWrite, err := s.enqueueCommand(t, s.cmdSN, s.expStatSN)
	if err != nil {
		delete(s.tasks, t.itt)
		return false, err
	}
	s.cmdSN++
	return mustWrite, nil
}

// issueQueued sends the queued commands the window and depth now allow;
// s.mu is held. mustWrite is as from enqueue (the reader, which holds the
// output queue, never gets true). A command that cannot be encoded ends
// with its error: it is returned for the caller to end after unlocking.
func (s *session) issueQueued() (mustWrite bool, failed []*task) {
	for len(s.queued) > 0 && s.canIssue() {
		t := s.queued[0]
		s.queued[0] = nil
		s.queued = s.queued[1:]
		must, err := s.issue(t)
		if err != nil {
			t.err = err
			failed = append(failed, t)
		}
		mustWrite = mustWrite || must
	}
	if len(s.queued) == 0 {
		s.queued = s.queued[:0:0]
	}
	return mustWrite, failed
}

// enqueueCommand queues the command PDU with its immediate data and any
// unsolicited Data-Out; s.mu is held.
func (s *session) enqueueCommand(t *task, cmdSN, expStatSN uint32) (bool, error) {
	c := t.cmd
	p := s.params
	total := uint32(len(c.Write))
	if len(c.Read) > 0 {
		total = uint32(len(c.Read))
	}
	var imm, unsolicited uint32
	if len(c.Write) > 0 {
		first := min(total, p.FirstBurstLength)
		if p.ImmediateData {
			imm = min(first, p.MaxSendDataSegmentLength)
		}
		unsolicited = imm
		if !p.InitialR2T {
			unsolicited = first
		}
	}
	cmd := scsiCommand{
		Final: unsolicited == imm, Read: len(c.Read) > 0, Write: len(c.Write) > 0,
		LUN: c.LUN, ITT: t.itt, ExpectedLength: total, CmdSN: cmdSN, ExpStatSN: expStatSN,
		CDB: c.CDB, Data: c.Write[:imm], Ordered: c.Ordered,
	}
	if err := cmd.encodeInto(&t.pdu); err != nil {
		return false, err
	}
	mustWrite, err := s.enqueue(&t.pdu, true)
	if err != nil || unsolicited == imm {
		return mustWrite, err
	}
	return mustWrite, s.enqueueData(t, reservedTag, imm, unsolicited-imm)
}

// enqueueData queues [off, off+n) of t's write buffer as Data-Out PDUs in
// pieces the target accepts; s.mu is held.
func (s *session) enqueueData(t *task, ttt uint32, off, n uint32) error {
	end := off + n
	var dataSN uint32
	for off < end {
		l := min(end-off, s.params.MaxSendDataSegmentLength)
		d := dataOut{
			Final: off+l == end, LUN: t.cmd.LUN, ITT: t.itt, TTT: ttt, ExpStatSN: s.expStatSN,
			DataSN: dataSN, BufferOffset: off, Data: t.cmd.Write[off : off+l],
		}
		if _, err := s.enqueue(d.encode(), false); err != nil {
			return err
		}
		off += l
		dataSN++
	}
	return nil
}

// sendData answers an R2T.
func (s *session) sendData(t *task, ttt uint32, off, n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enqueueData(t, ttt, off, n)
}

// sendNOP sends a NOP-Out: a ping of ours when itt is set, else the answer
// to the target's ping ttt.
func (s *session) sendNOP(itt, ttt uint32, lun uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	n := nopOut{ITT: itt, TTT: ttt, LUN: lun, CmdSN: s.cmdSN, ExpStatSN: s.expStatSN}
	s.enqueue(n.encode(), false)
}

// ping sends a NOP-Out that the target must answer.
func (s *session) ping() {
	s.mu.Lock()
	if s.err != nil || !s.pingSent.IsZero() {
		s.mu.Unlock()
		return
	}
	s.pingITT = s.newITT()
	s.pingSent = s.now()
	itt := s.pingITT
	s.mu.Unlock()
	s.sendNOP(itt, reservedTag, 0)
}

// watchdog ticks a few times per timeout and applies the liveness rules.
func (s *session) watchdog() {
	tick := min(s.live.Timeout, s.live.PingInterval) / 4
	tick = max(tick, 10*time.Millisecond)
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		select {
		case <-s.dead:
			return
		case <-tk.C:
		}
		s.mu.Lock()
		now := s.now()
		if n := s.recvd.Load(); n != s.seenRecvd {
			// Received since the last tick: at most one tick ago, and
			// the reader need not read the clock for every PDU.
			s.seenRecvd, s.lastRecv = n, now
		}
		in := livenessInput{Now: now, LastRecv: s.lastRecv, PingSent: s.pingSent}
		if len(s.queued) > 0 && !s.win.open(s.cmdSN) {
			if s.closedAt.IsZero() {
				s.closedAt = in.Now
			}
			in.WindowClosedSince = s.closedAt
		} else {
			s.closedAt = time.Time{}
		}
		for _, t := range s.tasks {
			if in.OldestTask.IsZero() || t.sent.Before(in.OldestTask) {
				in.OldestTask, in.OldestOp = t.sent, t.cmd.Op
			}
		}
		s.mu.Unlock()
		ping, dead := s.live.check(in)
		if dead != nil {
			s.kill(dead)
			return
		}
		if ping {
			s.ping()
		}
	}
}

// close logs out (waiting at most the timeout) and closes the connection.
func (s *session) close() {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		s.nc.Close()
		<-s.dead
		return
	}
	s.logoutITT = s.newITT()
	s.logout = make(chan error, 1)
	l := logoutRequest{ITT: s.logoutITT, CmdSN: s.cmdSN, ExpStatSN: s.expStatSN}
	ch := s.logout
	_, err := s.enqueue(l.encode(), false)
	s.mu.Unlock()
	if err == nil {
		select {
		case <-ch:
		case <-s.dead:
		case <-time.After(s.live.Timeout):
		}
	}
	s.kill(ErrClosed)
	<-s.dead
}

// isDead reports whether the session has failed (or is failing).
func (s *session) isDead() bool {
	select {
	case <-s.stop: // failing: its tasks may not all have been failed yet
		return true
	default:
		return false
	}
}
