package iscsi

import (
	"bufio"
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
	if s.logout != nil {
		s.logout <- err
	}
	s.mu.Unlock()
	s.nc.Close()
	<-s.writerDone
	s.out.shutdown(err)
	for _, t := range tasks {
		t.err = fmt.Errorf("%s: %w", t.cmd.Op, err)
		endTask(t)
	}
	close(s.dead)
}

func (s *session) readPDUs() error {
	maxData := int(s.params.MaxRecvDataSegmentLength)
	rd := directReader{br: s.br, raw: s.nc, out: s.out, s: s}
	for {
		h, err := readHeader(rd, s.digests, maxData)
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("%w: target closed the connection", ErrDisconnected)
			}
			return fmt.Errorf("%w: %w", ErrDisconnected, err)
		}
		s.recvd.Add(1)
		if h.pdu.Opcode() == opDataIn {
			if err := s.onDataIn(rd, &h); err != nil {
				return err
			}
			continue
		}
		h.pdu.Data = make([]byte, h.dataLen)
		if err := readData(rd, &h, h.pdu.Data, s.digests); err != nil {
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
	if s.win != old {
		s.cond.Broadcast()
	}
	s.mu.Unlock()
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

// complete removes t and wakes its caller.
func (s *session) complete(t *task) {
	s.mu.Lock()
	delete(s.tasks, t.itt)
	s.cond.Broadcast()
	s.mu.Unlock()
	s.out.hold()
	endTask(t)
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

// directReader reads through a bufio.Reader, but once the buffer is empty
// a large read (a Data-In segment landing in the caller's buffer) goes
// straight to the connection instead of being copied twice.
//
// Before it goes to the connection it lets the callers it has just woken
// run and queue their next commands, then has them written in one batch:
// like an event loop, one wake-up of the reader (and of the target) then
// serves many commands instead of one. With a deep queue it then waits a
// little (see coalesceDelay).
type directReader struct {
	br  *bufio.Reader
	raw io.Reader
	out *outq
	s   *session
}

const directReadMin = 16 << 10

// Completion coalescing: with at least coalesceMin commands outstanding
// the reader, having completed a batch, waits coalesceDelay before it goes
// back to the connection, so that one wake-up of the reader (and of the
// goroutines it completes) serves several target responses rather than
// one; the commands queued meanwhile are already on their way. The delay
// is small against the latency of a deep queue and never applies to a
// shallow one. Measured against tgtd (4 KiB QD32): 5-16% more IOPS.
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

func (r directReader) Read(p []byte) (int, error) {
	if r.br.Buffered() == 0 {
		if r.out != nil && r.out.holding() {
			runtime.Gosched()
			r.out.release()
			if r.s != nil && r.s.outstanding() >= coalesceMin {
				time.Sleep(coalesceDelay)
			}
		}
		if len(p) >= directReadMin {
			return r.raw.Read(p)
		}
	}
	return r.br.Read(p)
}
