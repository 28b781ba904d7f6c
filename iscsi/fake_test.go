package iscsi

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeTarget is a scripted iSCSI target behind a real net.Conn (net.Pipe):
// it accepts any login (answering our operational keys with the values in
// answer) and then hands every PDU to handle, writing back what it returns.
// It exists to produce target behaviour tgtd and gotgt cannot be told to
// produce (protocol violations, UNIT ATTENTION on demand, silence).
type fakeTarget struct {
	t        *testing.T
	answer   []kv
	handle   func(f *fakeTarget, p *PDU) []*PDU
	mu       sync.Mutex
	statSN   uint32
	maxWin   uint32 // MaxCmdSN - ExpCmdSN + 1 granted; default 64
	fixed    bool   // MaxCmdSN stays at fixedMax (the window stops sliding)
	fixedMax uint32
	expCmd   uint32
	got      []*PDU
	conn     net.Conn
	digests  Digests
	vpd      map[byte][]byte // extra VPD pages (and a replacement page 0)
	// capFlags is byte 14 of READ CAPACITY(16): 0x80 LBPME (thin), 0x40
	// LBPRZ (unmapped blocks read as zeros).
	capFlags byte
	// vendor and product answer the standard INQUIRY (default FAKE, TARGET).
	vendor, product string
	// tcp: serve over a loopback TCP connection instead of net.Pipe, so
	// the session takes its raw-socket paths (see rawsock.go).
	tcp bool
	// isid and logins identify the current login (the I_T nexus, for
	// the persistent reservation model of pr_fake_test.go).
	isid   [6]byte
	logins int
	wmu    sync.Mutex // serialises writes to the connection
}

func (f *fakeTarget) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	// Login: answer each request; transit to full feature when asked.
	for {
		p, err := ReadPDU(br, Digests{}, 1<<20)
		if err != nil {
			return
		}
		req := p
		csg, nsg, transit := req.BHS[1]>>2&3, req.BHS[1]&3, req.BHS[1]&0x80 != 0
		f.expCmd = req.u32(24)
		f.mu.Lock()
		if copy(f.isid[:], req.BHS[8:14]); transit && nsg == stageFullFeature {
			f.logins++
		}
		f.mu.Unlock()
		resp := &PDU{}
		resp.BHS[0] = opLoginResp
		resp.BHS[1] = csg<<2 | nsg
		if transit {
			resp.BHS[1] |= 0x80
		}
		copy(resp.BHS[8:14], req.BHS[8:14])
		binary.BigEndian.PutUint16(resp.BHS[14:], 7)
		resp.put32(16, req.ITT())
		resp.put32(24, f.statSN)
		f.statSN++
		resp.put32(28, f.expCmd)
		resp.put32(32, f.expCmd+f.window()-1)
		if csg == stageOperational {
			resp.Data = encodeText(f.answer)
		} else {
			resp.Data = encodeText([]kv{{"AuthMethod", "None"}})
		}
		if err := writePDU(c, resp, Digests{}); err != nil {
			return
		}
		if transit && nsg == stageFullFeature {
			break
		}
	}
	var dg Digests
	pairs, _ := decodeText(encodeText(f.answer))
	for _, p := range pairs {
		if p.Key == "HeaderDigest" && p.Value == "CRC32C" {
			dg.Header = true
		}
		if p.Key == "DataDigest" && p.Value == "CRC32C" {
			dg.Data = true
		}
	}
	f.mu.Lock()
	f.digests = dg
	f.mu.Unlock()
	for {
		p, err := ReadPDU(br, dg, 1<<24)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.got = append(f.got, p)
		f.mu.Unlock()
		if p.Opcode() == opLogoutReq {
			r := &PDU{}
			r.BHS[0], r.BHS[1] = opLogoutResp, 0x80
			r.put32(16, p.ITT())
			f.write(c, f.stamp(r, true), dg)
			return
		}
		for _, r := range f.handle(f, p) {
			if err := f.write(c, r, dg); err != nil {
				return
			}
		}
	}
}

func (f *fakeTarget) window() uint32 {
	if f.maxWin == 0 {
		return 64
	}
	return f.maxWin
}

// write sends r on c (raw bytes for the 0xff marker), one writer at a
// time: a handler may answer a held command from another connection's
// goroutine (sendLater).
func (f *fakeTarget) write(c net.Conn, r *PDU, d Digests) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if r.BHS[0] == 0xff { // marker: send these raw bytes
		_, err := c.Write(r.Data)
		return err
	}
	return writePDU(c, r, d)
}

// sendLater sends r on the current connection, outside the handler that
// received the command (a command held and answered later).
func (f *fakeTarget) sendLater(r *PDU) error {
	f.mu.Lock()
	c, d := f.conn, f.digests
	f.mu.Unlock()
	return f.write(c, r, d)
}

func writePDU(c net.Conn, p *PDU, d Digests) error {
	b, err := p.writeBuffers(d)
	if err != nil {
		return err
	}
	_, err = b.WriteTo(c)
	return err
}

// stamp fills StatSN/ExpCmdSN/MaxCmdSN on a response; the command it
// answers (if any) advances ExpCmdSN.
func (f *fakeTarget) stamp(p *PDU, status bool) *PDU {
	f.mu.Lock()
	defer f.mu.Unlock()
	p.put32(24, f.statSN)
	if status {
		f.statSN++
	}
	p.put32(28, f.expCmd)
	if f.fixed {
		p.put32(32, f.fixedMax)
	} else {
		p.put32(32, f.expCmd+f.window()-1)
	}
	return p
}

// completeCmd marks one more command as consumed (ExpCmdSN advances).
func (f *fakeTarget) completeCmd() {
	f.mu.Lock()
	f.expCmd++
	f.mu.Unlock()
}

// response builds a SCSI Response for cmd.
func (f *fakeTarget) response(cmd *PDU, status byte, sense []byte) *PDU {
	f.completeCmd()
	r := &PDU{}
	r.BHS[0] = opSCSIResponse
	r.BHS[1] = 0x80
	r.BHS[3] = status
	r.put32(16, cmd.ITT())
	if sense != nil {
		r.Data = append(binary.BigEndian.AppendUint16(nil, uint16(len(sense))), sense...)
	}
	return f.stamp(r, true)
}

// dataIn builds one Data-In PDU; with status it completes the command.
func (f *fakeTarget) dataIn(cmd *PDU, off uint32, data []byte, dataSN uint32, status bool) *PDU {
	if status {
		f.completeCmd()
	}
	r := &PDU{Data: data}
	r.BHS[0] = opDataIn
	if status {
		r.BHS[1] = 0x81
	}
	r.put32(16, cmd.ITT())
	r.put32(20, reservedTag)
	r.put32(36, dataSN)
	r.put32(40, off)
	return f.stamp(r, status)
}

func fixedSense(key, asc, ascq byte) []byte {
	s := make([]byte, 18)
	s[0], s[2], s[7], s[12], s[13] = 0x70, key, 10, asc, ascq
	return s
}

// startFake runs a fake target and opens a Disk on it. A handler for the
// identification commands is put in front of handle.
func startFake(t *testing.T, cfg Config, answer []kv, handle func(f *fakeTarget, p *PDU) []*PDU) (*Disk, *fakeTarget) {
	t.Helper()
	return startFakeWith(t, cfg, answer, nil, handle)
}

// startFakeWith is startFake with a setup of the fake before login.
func startFakeWith(t *testing.T, cfg Config, answer []kv, setup func(f *fakeTarget), handle func(f *fakeTarget, p *PDU) []*PDU) (*Disk, *fakeTarget) {
	t.Helper()
	f := &fakeTarget{t: t, answer: answer}
	if setup != nil {
		setup(f)
	}
	f.handle = func(f *fakeTarget, p *PDU) []*PDU {
		if r := identify(f, p); r != nil {
			return r
		}
		return handle(f, p)
	}
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if f.tcp {
			return f.dialTCP(ctx)
		}
		a, b := net.Pipe()
		go f.serve(b)
		f.mu.Lock()
		f.conn = b
		f.mu.Unlock()
		return a, nil
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.ReconnectInterval == 0 {
		cfg.ReconnectInterval = time.Hour // tests that reconnect set it
	}
	d, err := OpenLeg(context.Background(), "iscsi://fake/iqn.2026-01.test:fake/0", cfg)
	if err != nil {
		t.Fatalf("open on the fake target: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, f
}

// dialTCP connects to a one-connection loopback listener served by f.
func (f *fakeTarget) dialTCP(ctx context.Context) (net.Conn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	var dl net.Dialer
	a, err := dl.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	b, err := ln.Accept()
	if err != nil {
		a.Close()
		return nil, err
	}
	go f.serve(b)
	f.mu.Lock()
	f.conn = b
	f.mu.Unlock()
	return a, nil
}

// identify answers TEST UNIT READY, INQUIRY, VPD and READ CAPACITY(16)
// for a 1 MiB LUN of 512-byte blocks; nil for anything else.
func identify(f *fakeTarget, p *PDU) []*PDU {
	if p.Opcode() != opSCSICommand {
		return nil
	}
	cdb := p.BHS[32:48]
	if f.vpd != nil && cdb[0] == scsiInquiry && cdb[1]&1 == 1 {
		if page, ok := f.vpd[cdb[2]]; ok {
			return []*PDU{f.dataIn(p, 0, page, 0, true)}
		}
	}
	switch {
	case cdb[0] == scsiTestUnitReady:
		return []*PDU{f.response(p, statusGood, nil)}
	case cdb[0] == scsiInquiry && cdb[1]&1 == 0:
		d := make([]byte, 36)
		vendor, product := f.vendor, f.product
		if vendor == "" {
			vendor, product = "FAKE", "TARGET"
		}
		copy(d[8:], fmt.Sprintf("%-8s%-16s", vendor, product))
		return []*PDU{f.dataIn(p, 0, d, 0, true)}
	case cdb[0] == scsiInquiry && cdb[2] == 0:
		return []*PDU{f.dataIn(p, 0, []byte{0, 0, 0, 2, 0x00, 0x80}, 0, true)}
	case cdb[0] == scsiInquiry && cdb[2] == 0x80:
		return []*PDU{f.dataIn(p, 0, []byte{0, 0x80, 0, 4, 'S', 'N', '4', '2'}, 0, true)}
	case cdb[0] == scsiServiceIn16:
		d := make([]byte, 32)
		binary.BigEndian.PutUint64(d, 2047)
		binary.BigEndian.PutUint32(d[8:], 512)
		d[14] = f.capFlags
		return []*PDU{f.dataIn(p, 0, d, 0, true)}
	}
	return nil
}

// received returns the PDUs the target got after login.
func (f *fakeTarget) received() []*PDU {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*PDU(nil), f.got...)
}

// onCmd adapts a handler of SCSI commands only; NOP-Out pings are answered.
func onCmd(h func(f *fakeTarget, p *PDU) []*PDU) func(f *fakeTarget, p *PDU) []*PDU {
	return func(f *fakeTarget, p *PDU) []*PDU {
		switch p.Opcode() {
		case opSCSICommand:
			return h(f, p)
		case opNOPOut:
			if p.ITT() == reservedTag {
				return nil
			}
			r := &PDU{}
			r.BHS[0], r.BHS[1] = opNOPIn, 0x80
			r.put32(16, p.ITT())
			r.put32(20, reservedTag)
			return []*PDU{f.stamp(r, true)}
		}
		return nil
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 3s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// raw wraps wire bytes the fake sends as they are (for corrupt PDUs).
func raw(b []byte) *PDU {
	p := &PDU{Data: b}
	p.BHS[0] = 0xff
	return p
}
