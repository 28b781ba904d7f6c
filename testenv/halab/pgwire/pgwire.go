package pgwire

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// MaxMessage bounds one backend message; a longer length is a protocol
// error (the client never asks for large results).
const MaxMessage = 1 << 20

// protocolVersion is 3.0.
const protocolVersion = 3 << 16

// ErrProtocol marks a malformed or unexpected backend message.
var ErrProtocol = errors.New("pgwire: protocol error")

// Error is an ErrorResponse from the server.
type Error struct {
	Severity, Code, Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("postgres %s %s: %s", e.Severity, e.Code, e.Message)
}

// Conn is one session on an open connection.
type Conn struct {
	c net.Conn
	r *bufio.Reader
}

// Result is what one simple query returned: the rows of its last
// statement, in text form (nil for NULL), and its command tags.
type Result struct {
	Rows [][]*string
	Tags []string
}

// Startup runs the start-up handshake on c (trust, cleartext or MD5
// password authentication) and waits until the server is ready for
// queries. Deadlines are the caller's (set them on c).
func Startup(c net.Conn, user, database, password string) (*Conn, error) {
	pc := &Conn{c: c, r: bufio.NewReader(c)}
	body := binary.BigEndian.AppendUint32(nil, protocolVersion)
	for _, kv := range [][2]string{{"user", user}, {"database", database}, {"application_name", "halab"}} {
		body = append(append(append(append(body, kv[0]...), 0), kv[1]...), 0)
	}
	body = append(body, 0)
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))
	if _, err := c.Write(append(msg, body...)); err != nil {
		return nil, err
	}
	for {
		typ, b, err := ReadMessage(pc.r)
		if err != nil {
			return nil, err
		}
		switch typ {
		case 'R':
			reply, err := authReply(b, user, password)
			if err != nil {
				return nil, err
			}
			if reply != nil {
				if _, err := c.Write(frame('p', reply)); err != nil {
					return nil, err
				}
			}
		case 'E':
			return nil, ParseError(b)
		case 'S', 'K', 'N':
		case 'Z':
			return pc, nil
		default:
			return nil, fmt.Errorf("%w: message %q during start-up", ErrProtocol, typ)
		}
	}
}

// authReply answers an Authentication message: nil for AuthenticationOk.
func authReply(b []byte, user, password string) ([]byte, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: short authentication message", ErrProtocol)
	}
	switch code := binary.BigEndian.Uint32(b); code {
	case 0:
		if len(b) != 4 {
			return nil, fmt.Errorf("%w: AuthenticationOk of %d bytes", ErrProtocol, len(b))
		}
		return nil, nil
	case 3:
		return append([]byte(password), 0), nil
	case 5:
		if len(b) != 8 {
			return nil, fmt.Errorf("%w: MD5 request of %d bytes", ErrProtocol, len(b))
		}
		inner := md5.Sum([]byte(password + user))
		outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), b[4:8]...))
		return append([]byte("md5"+hex.EncodeToString(outer[:])), 0), nil
	default:
		return nil, fmt.Errorf("pgwire: the server asks for authentication method %d; this client speaks trust, password and md5 only (set them in pg_hba.conf)", code)
	}
}

func frame(typ byte, body []byte) []byte {
	m := append([]byte{typ}, binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))...)
	return append(m, body...)
}

// ReadMessage reads one backend message: its type and body.
func ReadMessage(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n < 4 || n-4 > MaxMessage {
		return 0, nil, fmt.Errorf("%w: message %q of length %d", ErrProtocol, h[0], n)
	}
	b := make([]byte, n-4)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return h[0], b, nil
}

// Query runs sql with the simple query protocol and returns when the
// server is ready again. A statement's error is an *Error, returned after
// the server is ready (the session stays usable).
func (pc *Conn) Query(sql string) (*Result, error) {
	if strings.IndexByte(sql, 0) >= 0 {
		return nil, errors.New("pgwire: query holds a NUL byte")
	}
	if _, err := pc.c.Write(frame('Q', append([]byte(sql), 0))); err != nil {
		return nil, err
	}
	res := &Result{}
	var qerr error
	for {
		typ, b, err := ReadMessage(pc.r)
		if err != nil {
			return nil, err
		}
		switch typ {
		case 'T':
			res.Rows = nil // a new statement's rows
		case 'D':
			row, err := ParseDataRow(b)
			if err != nil {
				return nil, err
			}
			res.Rows = append(res.Rows, row)
		case 'C':
			tag, err := cstring(b)
			if err != nil {
				return nil, err
			}
			res.Tags = append(res.Tags, tag)
		case 'E':
			qerr = ParseError(b)
		case 'I', 'N', 'S':
		case 'Z':
			if len(b) != 1 {
				return nil, fmt.Errorf("%w: ReadyForQuery of %d bytes", ErrProtocol, len(b))
			}
			return res, qerr
		default:
			return nil, fmt.Errorf("%w: message %q in a query's reply", ErrProtocol, typ)
		}
	}
}

// Close ends the session and the connection.
func (pc *Conn) Close() error {
	pc.c.Write(frame('X', nil))
	return pc.c.Close()
}

// ParseDataRow decodes a DataRow body.
func ParseDataRow(b []byte) ([]*string, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: short DataRow", ErrProtocol)
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	row := make([]*string, 0, min(n, len(b)/4))
	for i := 0; i < n; i++ {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: DataRow column %d cut short", ErrProtocol, i)
		}
		l := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		if l == -1 {
			row = append(row, nil)
			continue
		}
		if l < 0 || int(l) > len(b) {
			return nil, fmt.Errorf("%w: DataRow column %d of length %d", ErrProtocol, i, l)
		}
		s := string(b[:l])
		row = append(row, &s)
		b = b[l:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after DataRow's columns", ErrProtocol, len(b))
	}
	return row, nil
}

// ParseError decodes an ErrorResponse body (a malformed one still yields
// an *Error, saying so).
func ParseError(b []byte) error {
	e := &Error{}
	for len(b) > 0 && b[0] != 0 {
		code := b[0]
		v, err := cstring(b[1:])
		if err != nil {
			e.Message += " (malformed error response)"
			return e
		}
		b = b[1+len(v)+1:]
		switch code {
		case 'S':
			e.Severity = v
		case 'C':
			e.Code = v
		case 'M':
			e.Message = v
		}
	}
	return e
}

// cstring returns the NUL-terminated string at the start of b.
func cstring(b []byte) (string, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", fmt.Errorf("%w: string without NUL", ErrProtocol)
	}
	return string(b[:i]), nil
}
