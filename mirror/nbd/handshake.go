package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Handshake limits: a client that needs more is hostile or broken.
const (
	maxOptionLen = 64 << 10 // largest option payload read (names are <= 4096)
	maxOptions   = 1024     // options per handshake before the server hangs up
)

// session is what the handshake negotiated for the transmission phase.
type session struct {
	structured bool
	flags      uint16 // transmission flags sent to the client
}

// errAbort is returned by handshake when the client ended the session cleanly
// (NBD_OPT_ABORT) or sent nothing at all.
var errAbort = errors.New("nbd: client ended the handshake")

// handshake runs fixed newstyle negotiation on rw until the client picks the
// export (NBD_OPT_GO or NBD_OPT_EXPORT_NAME). Only the options the server
// understands are acted on; everything else gets NBD_REP_ERR_UNSUP.
func (s *Server) handshake(r *bufio.Reader, w *bufio.Writer) (session, error) {
	var out []byte
	out = binary.BigEndian.AppendUint64(out, magicNBD)
	out = binary.BigEndian.AppendUint64(out, magicIHaveOpt)
	out = binary.BigEndian.AppendUint16(out, flagFixedNewstyle|flagNoZeroes)
	if _, err := w.Write(out); err != nil {
		return session{}, err
	}
	if err := w.Flush(); err != nil {
		return session{}, err
	}
	var b4 [4]byte
	if _, err := io.ReadFull(r, b4[:]); err != nil {
		return session{}, fmt.Errorf("%w: %w", errAbort, err)
	}
	cflags := binary.BigEndian.Uint32(b4[:])
	if cflags&^(clientFixedNewstyle|clientNoZeroes) != 0 {
		return session{}, fmt.Errorf("nbd: client sent unknown handshake flags %#x", cflags)
	}
	noZeroes := cflags&clientNoZeroes != 0

	var sess session
	var hdr [16]byte
	for range maxOptions {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return session{}, fmt.Errorf("nbd: reading option header: %w", err)
		}
		if m := binary.BigEndian.Uint64(hdr[0:8]); m != magicIHaveOpt {
			return session{}, fmt.Errorf("nbd: option magic %#x, want IHAVEOPT", m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:12])
		n := binary.BigEndian.Uint32(hdr[12:16])
		if n > maxOptionLen {
			return session{}, fmt.Errorf("nbd: option %d carries %d bytes, more than the %d allowed", opt, n, maxOptionLen)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			return session{}, fmt.Errorf("nbd: reading option %d: %w", opt, err)
		}
		reply := func(typ uint32, payload []byte) error {
			_, err := w.Write(appendOptReply(nil, opt, typ, payload))
			return err
		}
		replyErr := func(typ uint32, msg string) error { return reply(typ, []byte(msg)) }

		var err error
		switch opt {
		case optExportName:
			if !s.knownExport(string(data)) {
				return session{}, fmt.Errorf("nbd: client asked for unknown export %q", data)
			}
			sess.flags = s.transmissionFlags(sess.structured)
			var b []byte
			b = binary.BigEndian.AppendUint64(b, uint64(s.backend.Size()))
			b = binary.BigEndian.AppendUint16(b, sess.flags)
			if !noZeroes {
				b = append(b, make([]byte, 124)...)
			}
			if _, err := w.Write(b); err != nil {
				return session{}, err
			}
			return sess, w.Flush()
		case optAbort:
			reply(repAck, nil)
			w.Flush()
			return session{}, errAbort
		case optList:
			if n != 0 {
				err = replyErr(repErrInvalid, "NBD_OPT_LIST takes no data")
				break
			}
			var p []byte
			p = binary.BigEndian.AppendUint32(p, uint32(len(s.opts.ExportName)))
			p = append(p, s.opts.ExportName...)
			p = append(p, s.opts.Description...)
			if err = reply(repServer, p); err == nil {
				err = reply(repAck, nil)
			}
		case optStructuredReply:
			if n != 0 {
				err = replyErr(repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
				break
			}
			sess.structured = true
			err = reply(repAck, nil)
		case optInfo, optGo:
			req, derr := decodeInfoRequest(data)
			if derr != nil {
				err = replyErr(repErrInvalid, "malformed NBD_OPT_INFO/GO: "+derr.Error())
				break
			}
			if !s.knownExport(req.name) {
				err = replyErr(repErrUnknown, fmt.Sprintf("no export named %q (this server has %q)", req.name, s.opts.ExportName))
				break
			}
			flags := s.transmissionFlags(sess.structured)
			if err = s.sendInfo(reply, req, flags); err != nil {
				break
			}
			if err = reply(repAck, nil); err != nil {
				break
			}
			if opt == optGo {
				sess.flags = flags
				return sess, w.Flush()
			}
		case optStartTLS:
			err = replyErr(repErrPolicy, "TLS is not offered: use a unix socket or a trusted network")
		default:
			err = replyErr(repErrUnsup, fmt.Sprintf("option %d is not supported", opt))
		}
		if err != nil {
			return session{}, err
		}
		if err := w.Flush(); err != nil {
			return session{}, err
		}
	}
	return session{}, fmt.Errorf("nbd: client sent more than %d options", maxOptions)
}

// sendInfo answers the info part of NBD_OPT_INFO/GO: the export info always,
// the block sizes always (the server enforces them), name and description
// when asked.
func (s *Server) sendInfo(reply func(uint32, []byte) error, req infoRequest, flags uint16) error {
	var p []byte
	p = binary.BigEndian.AppendUint16(p, infoExport)
	p = binary.BigEndian.AppendUint64(p, uint64(s.backend.Size()))
	p = binary.BigEndian.AppendUint16(p, flags)
	if err := reply(repInfo, p); err != nil {
		return err
	}
	minB, prefB, maxB := s.blockSizes()
	p = binary.BigEndian.AppendUint16(p[:0], infoBlockSize)
	p = binary.BigEndian.AppendUint32(p, minB)
	p = binary.BigEndian.AppendUint32(p, prefB)
	p = binary.BigEndian.AppendUint32(p, maxB)
	if err := reply(repInfo, p); err != nil {
		return err
	}
	if slices.Contains(req.infos, infoName) {
		p = binary.BigEndian.AppendUint16(p[:0], infoName)
		p = append(p, s.opts.ExportName...)
		if err := reply(repInfo, p); err != nil {
			return err
		}
	}
	if slices.Contains(req.infos, infoDescription) && s.opts.Description != "" {
		p = binary.BigEndian.AppendUint16(p[:0], infoDescription)
		p = append(p, s.opts.Description...)
		if err := reply(repInfo, p); err != nil {
			return err
		}
	}
	return nil
}

// knownExport reports whether name selects this server's export: the empty
// (default) name always does.
func (s *Server) knownExport(name string) bool {
	return name == "" || name == s.opts.ExportName
}

// transmissionFlags are the flags advertised for the export. MULTI_CONN is
// honest because every FLUSH and FUA goes to the shared backend, which
// flushes the legs themselves: it covers writes from every connection.
func (s *Server) transmissionFlags(structured bool) uint16 {
	f := uint16(FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes | FlagCanMultiConn)
	if s.opts.ReadOnly {
		f |= FlagReadOnly
	}
	if structured {
		f |= FlagSendDF
	}
	return f
}

// blockSizes are the honest minimum (the backend's alignment), preferred
// (at least 4 KiB) and maximum (the largest payload accepted) block sizes.
func (s *Server) blockSizes() (minB, prefB, maxB uint32) {
	minB = uint32(s.backend.BlockSize())
	prefB = max(minB, 4096)
	maxB = uint32(s.opts.MaxPayload)
	return minB, prefB, maxB
}
