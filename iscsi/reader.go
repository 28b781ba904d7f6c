package iscsi

import (
	"fmt"
	"io"
	"runtime"
	"time"
)

// readLoop is the session's only reader. It places Data-In directly into
// the task's buffer and completes tasks; when the connection fails it fails
// every outstanding task with the reason.
func (s *session) readLoop() {
	err := s.readPDUs()
	s.mu.Lock()
	s.failLocked(err)
	err = s.err
	tasks := s.tasks
	s.tasks = map[uint32]*task{}
	queued := s.queued
	s.queued = nil
	if s.logout != nil {
		s.logout <- err
	}
	s.mu.Unlock()
	s.nc.Close()
	<-s.writerDone
	s.out.shutdown(err)
	for _, t := range tasks {
		t.err = fmt.Errorf("%s: %w", t.cmd.Op, err)
		t.ended(t)
	}
	for _, t := range queued {
		t.err = fmt.Errorf("%s: %w", t.cmd.Op, err)
		t.ended(t)
	}
	close(s.dead)
}

func (s *session) readPDUs() error {
	maxData := int(s.params.MaxRecvDataSegmentLength)
	rd := &directReader{raw: s.raw, buf: make([]byte, readBufferSize), out: s.out, s: s, nb: newNBWriter(s.nc)}
	h := new(header) // reused: the reader allocates nothing per PDU it does not keep
	for {
		err := readHeaderInto(rd, h, s.digests, maxData)
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("%w: target closed the connection", ErrDisconnected)
			}
			return fmt.Errorf("%w: %w", ErrDisconnected, err)
		}
		s.recvd.Add(1)
		if h.pdu.Opcode() == opDataIn {
			if err := s.onDataIn(rd, h); err != nil {
				return err
			}
			rd.exact = h.dataLen >= directReadMin
			continue
		}
		rd.exact = false
		h.pdu.Data = make([]byte, h.dataLen)
		if err := readData(rd, h, h.pdu.Data, s.digests); err != nil {
			return fmt.Errorf("%w: %w", ErrDisconnected, err)
		}
		if err := s.dispatch(&h.pdu); err != nil {
			return err
		}
	}
}

// advance folds a target PDU's sequence numbers in; statusPDU says whether
// it carries status (and so consumes a StatSN).
func (s *session) advance(n sn, statusPDU bool) {
	s.mu.Lock()
	if statusPDU && serialLE(s.expStatSN, n.StatSN+1) {
		s.expStatSN = n.StatSN + 1
	}
	old := s.win
	s.win.update(n.ExpCmdSN, n.MaxCmdSN)
	var failed []*task
	var must bool
	if s.win != old && len(s.queued) > 0 {
		must, failed = s.issueQueued()
	}
	s.mu.Unlock()
	if must {
		s.out.handOff() // not expected: the reader holds the queue
	}
	for _, t := range failed {
		t.ended(t)
	}
}

func (s *session) lookupTask(itt uint32, what string) (*task, error) {
	s.mu.Lock()
	t := s.tasks[itt]
	s.mu.Unlock()
	if t == nil {
		return nil, fmt.Errorf("%w: %s for unknown ITT %#x", ErrProtocol, what, itt)
	}
	return t, nil
}

// complete removes t, starts what its slot lets go and tells t's owner.
func (s *session) complete(t *task) {
	s.mu.Lock()
	delete(s.tasks, t.itt)
	var failed []*task
	var must bool
	if len(s.queued) > 0 {
		must, failed = s.issueQueued()
	}
	s.mu.Unlock()
	if must {
		s.out.handOff() // not expected: the reader holds the queue
	}
	for _, f := range failed {
		f.ended(f)
	}
	if t.done != nil || t.wakes {
		s.wokeSync = true
	}
	t.ended(t)
}

func (s *session) onDataIn(rd io.Reader, h *header) error {
	d, err := decodeDataIn(&h.pdu, h.dataLen)
	if err != nil {
		return err
	}
	t, err := s.lookupTask(d.ITT, "Data-In")
	if err != nil {
		return err
	}
	if d.DataSN != t.dataSN {
		return fmt.Errorf("%w: Data-In DataSN %d, expected %d", ErrProtocol, d.DataSN, t.dataSN)
	}
	if d.BufferOffset != t.recv {
		return fmt.Errorf("%w: Data-In at offset %d, expected %d (in order)", ErrProtocol, d.BufferOffset, t.recv)
	}
	if uint64(d.BufferOffset)+uint64(d.Length) > uint64(len(t.cmd.Read)) {
		return fmt.Errorf("%w: Data-In of %d bytes at %d overruns the %d-byte buffer of %s",
			ErrProtocol, d.Length, d.BufferOffset, len(t.cmd.Read), t.cmd.Op)
	}
	if err := readData(rd, h, t.cmd.Read[d.BufferOffset:d.BufferOffset+uint32(d.Length)], s.digests); err != nil {
		return fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	t.dataSN++
	t.recv += uint32(d.Length)
	s.advance(d.sn, d.HasStatus)
	if d.HasStatus {
		t.res = result{Status: d.Status, Residual: d.Residual, Underflow: d.Underflow, Overflow: d.Overflow, Received: int(t.recv)}
		s.complete(t)
	}
	return nil
}

func (s *session) dispatch(p *PDU) error {
	switch p.Opcode() {
	case opSCSIResponse:
		r, err := decodeSCSIResponse(p)
		if err != nil {
			return err
		}
		t, err := s.lookupTask(r.ITT, "SCSI Response")
		if err != nil {
			return err
		}
		s.advance(r.sn, true)
		t.res = result{Response: r.Response, Status: r.Status, Sense: r.Sense, Residual: r.Residual,
			Underflow: r.Underflow, Overflow: r.Overflow, Received: int(t.recv)}
		s.complete(t)
	case opR2T:
		r, err := decodeR2T(p)
		if err != nil {
			return err
		}
		t, err := s.lookupTask(r.ITT, "R2T")
		if err != nil {
			return err
		}
		if uint64(r.BufferOffset)+uint64(r.Length) > uint64(len(t.cmd.Write)) {
			return fmt.Errorf("%w: R2T for %d bytes at %d beyond the %d-byte write", ErrProtocol, r.Length, r.BufferOffset, len(t.cmd.Write))
		}
		s.advance(r.sn, false)
		// Queued, never written here: the reader must keep reading or a
		// target writing to us while we write to it would deadlock.
		if err := s.sendData(t, r.TTT, r.BufferOffset, r.Length); err != nil {
			return err
		}
	case opNOPIn:
		n, err := decodeNOPIn(p)
		if err != nil {
			return err
		}
		s.advance(n.sn, n.ITT != reservedTag)
		s.mu.Lock()
		if n.ITT != reservedTag && n.ITT == s.pingITT {
			s.pingITT, s.pingSent = 0, time.Time{}
		}
		s.mu.Unlock()
		if n.TTT != reservedTag {
			// The target pings us: answer with its TTT.
			s.sendNOP(reservedTag, n.TTT, decodeLUN(n.LUN[:]))
		}
	case opAsync:
		a, err := decodeAsync(p)
		if err != nil {
			return err
		}
		s.advance(a.sn, true)
		switch a.Event {
		case asyncLogoutRequest, asyncDropConnection, asyncDropSession:
			return fmt.Errorf("%w: the target asked to end the session (async event %d)", ErrDisconnected, a.Event)
		case asyncNegotiate:
			return fmt.Errorf("%w: the target asked to renegotiate, which is not supported", ErrDisconnected)
		}
	case opReject:
		r, err := decodeReject(p)
		if err != nil {
			return err
		}
		s.advance(r.sn, true)
		return fmt.Errorf("%w: target rejected a PDU (opcode %#x, reason %#x)", ErrProtocol, r.RejectedOp, r.Reason)
	case opLogoutResp:
		l, err := decodeLogoutResponse(p)
		if err != nil {
			return err
		}
		s.advance(l.sn, true)
		s.mu.Lock()
		ch := s.logout
		s.mu.Unlock()
		if ch != nil && l.ITT == s.logoutITT {
			return fmt.Errorf("%w: logged out", ErrClosed)
		}
		return fmt.Errorf("%w: unexpected Logout Response", ErrProtocol)
	case opTaskMgmtResp, opTextResp:
		return fmt.Errorf("%w: unsolicited response opcode %#x", ErrProtocol, p.Opcode())
	default:
		return fmt.Errorf("%w: unexpected opcode %#x from target", ErrProtocol, p.Opcode())
	}
	return nil
}

// directReader is the reader's buffered view of the connection. Small
// PDUs are read many at a time into buf; a large data segment (a Data-In
// landing in the caller's buffer) goes straight from the connection to its
// place once buf is empty, and after one the next header is read alone so
// that the following segment lands in place too instead of being copied.
//
// Before it goes to the connection it sends, in one batch, what handling
// the PDUs it has read queued: the next commands that completion callbacks
// started, and (after letting them run) those of exec callers it woke.
// Like an event loop, one wake-up of the reader (and of the target) then
// serves many commands instead of one.
type directReader struct {
	raw   io.Reader
	buf   []byte
	r, w  int  // buf[r:w] is read but not consumed
	exact bool // the last data segment was large: read no more than asked
	out   *outq
	s     *session
	nb    *nbWriter
}

// readBufferSize is how much the reader takes from the socket at once.
const readBufferSize = 256 << 10

const directReadMin = 16 << 10

// Completion coalescing for exec callers: with at least coalesceMin
// commands outstanding the reader, having woken blocked callers, waits
// coalesceDelay before it goes back to the connection, so that one wake-up
// of the reader (and of the goroutines it completes) serves several target
// responses rather than one. The delay is small against the latency of a
// deep queue and never applies to a shallow one or to callback-driven I/O.
const (
	coalesceMin   = 16
	coalesceDelay = 20 * time.Microsecond
)

// outstanding is the number of commands in flight.
func (s *session) outstanding() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tasks)
}

func (r *directReader) Read(p []byte) (int, error) {
	if r.r == r.w {
		if err := r.beforeWait(); err != nil {
			return 0, err
		}
		if len(p) >= directReadMin {
			n, err := r.raw.Read(p)
			r.hold()
			return n, err
		}
		want := r.buf
		if r.exact && len(p) < len(want) {
			want = want[:len(p)]
		}
		n, err := r.raw.Read(want)
		r.hold()
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return 0, err
		}
		r.r, r.w = 0, n
	}
	n := copy(p, r.buf[r.r:r.w])
	r.r += n
	return n, nil
}

// hold is called once the reader has something to handle: whatever
// handling it queues (the next commands of the callers it completes,
// Data-Out for an R2T) is left for beforeWait to write in one batch, and
// senders on other goroutines leave theirs too. While the reader waits on
// the socket there is no hold: senders write themselves.
func (r *directReader) hold() {
	if r.out != nil {
		r.out.hold()
	}
}

// beforeWait sends what the PDUs handled since the last wait queued, as
// the reader is about to read from the socket (and maybe wait).
func (r *directReader) beforeWait() error {
	if r.out == nil || !r.out.holding() {
		return nil
	}
	woke := r.s != nil && r.s.wokeSync
	if woke {
		r.s.wokeSync = false
		runtime.Gosched()
	}
	if r.nb != nil {
		if err := r.out.releaseWriting(r.nb); err != nil {
			return fmt.Errorf("sending to target: %w", err)
		}
	} else {
		r.out.release()
	}
	if woke && r.s.outstanding() >= coalesceMin {
		time.Sleep(coalesceDelay)
	}
	return nil
}
