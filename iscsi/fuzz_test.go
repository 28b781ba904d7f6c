package iscsi

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzReadPDU: any byte stream decodes to PDUs or an error, and every
// typed decoder accepts or rejects the PDU without panicking.
func FuzzReadPDU(f *testing.F) {
	for _, d := range []Digests{{}, {Header: true, Data: true}} {
		w, _ := samplePDU().Marshal(nil, d)
		f.Add(w, d.Header, d.Data)
	}
	ft := &fakeTarget{}
	cmd := samplePDU()
	f.Add(mustWire(ft.response(cmd, statusCheckCondition, fixedSense(6, 0x2a, 4))), false, false)
	f.Add(mustWire(ft.dataIn(cmd, 0, []byte("data"), 0, true)), false, false)
	f.Add([]byte{opR2T, 0x80, 0, 0, 0, 0, 0, 0}, false, false)
	f.Fuzz(func(t *testing.T, b []byte, hd, dd bool) {
		r := bytes.NewReader(b)
		for range 8 {
			p, err := ReadPDU(r, Digests{Header: hd, Data: dd}, 1<<16)
			if err != nil {
				return
			}
			decodeSCSIResponse(p)
			decodeDataIn(p, len(p.Data))
			decodeR2T(p)
			decodeNOPIn(p)
			decodeAsync(p)
			decodeReject(p)
			decodeLoginResponse(p)
			decodeTextResponse(p)
			decodeLogoutResponse(p)
			if _, err := p.Marshal(nil, Digests{Header: hd, Data: dd}); err != nil {
				t.Fatalf("a decoded PDU does not marshal: %v", err)
			}
		}
	})
}

func mustWire(p *PDU) []byte {
	b, err := p.Marshal(nil, Digests{})
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzDecoders feeds the SCSI and text decoders arbitrary data.
func FuzzDecoders(f *testing.F) {
	f.Add([]byte("TargetName=iqn.x\x00TargetAddress=1.2.3.4:3260,1\x00"))
	f.Add(fixedSense(5, 0x24, 0))
	f.Add([]byte{0, 0x83, 0, 8, 1, 3, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 16, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{15, 0, 0, 0, 0x0a, 10, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeText(b)
		parseSendTargets(b)
		decodeSense(b)
		decodeStdInquiry(b)
		decodeSupportedVPD(b)
		decodeSerialVPD(b)
		decodeDeviceIDVPD(b)
		var l Limits
		decodeBlockLimitsVPD(b, &l)
		decodeLBPVPD(b, &l)
		decodeCapacity16(b)
		decodeReportLUNs(b)
		decodeReadKeys(b)
		decodeReadReservation(b)
		decodeReportCapabilities(b)
		decodeControlTST(b)
		if pairs, err := decodeText(b); err == nil {
			n := newNegotiator(Params{MaxRecvDataSegmentLength: 8192, MaxBurstLength: 65536, FirstBurstLength: 8192, MaxOutstandingR2T: 1, HeaderDigest: true}, false)
			n.offer()
			n.apply(pairs)
			m := newLoginMachine(loginSetup{InitiatorName: "iqn.i", TargetName: "iqn.t",
				CHAP: &chapState{user: "u", secret: "s", targetSecret: "t", rand: bytes.NewReader(make([]byte, 64))}})
			m.first()
			for range 4 {
				if _, _, err := m.next(loginResponse{CSG: m.stage, NSG: 1, Data: b}); err != nil {
					break
				}
			}
		}
	})
}

// FuzzSession: a hostile target answers a READ and a WRITE with arbitrary
// bytes and then hangs up. The commands must end with a result or an
// error — never a panic, a hang, or a write outside the read buffer.
func FuzzSession(f *testing.F) {
	ft := &fakeTarget{}
	cmd := &PDU{}
	cmd.put32(16, 1)
	f.Add(mustWire(ft.dataIn(cmd, 0, make([]byte, 512), 0, true)), false)
	f.Add(append(mustWire(ft.dataIn(cmd, 0, make([]byte, 256), 0, false)), mustWire(ft.response(cmd, 0, nil))...), false)
	r2t := &PDU{}
	r2t.BHS[0], r2t.BHS[1] = opR2T, 0x80
	r2t.put32(16, 2)
	r2t.put32(20, 5)
	r2t.put32(44, 512)
	f.Add(mustWire(r2t), true)
	f.Fuzz(func(t *testing.T, stream []byte, write bool) {
		a, b := net.Pipe()
		go func() {
			go io.Copy(io.Discard, b)
			b.SetDeadline(time.Now().Add(2 * time.Second))
			b.Write(stream)
			b.Close()
		}()
		p := defaultParams()
		p.MaxRecvDataSegmentLength = 4096
		p.InitialR2T = true
		s := newSession(a, bufio.NewReader(a), p, sn{ExpCmdSN: 1, MaxCmdSN: 8},
			liveness{Timeout: time.Second, PingInterval: time.Second}, 8, time.Now)
		buf := make([]byte, 512+16)
		guard := binary.BigEndian.Uint64([]byte("GUARDGUA"))
		binary.BigEndian.PutUint64(buf[512:], guard)
		c := command{Op: "READ(16)", CDB: cdbRW16(scsiRead16, 0, 1, false), Read: buf[:512]}
		if write {
			c = command{Op: "WRITE(16)", CDB: cdbRW16(scsiWrite16, 0, 1, false), Write: make([]byte, 512)}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.exec(c)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("command did not end after the target hung up")
		}
		s.kill(ErrClosed)
		<-s.dead
		if binary.BigEndian.Uint64(buf[512:]) != guard {
			t.Fatal("Data-In wrote beyond the read buffer")
		}
	})
}
