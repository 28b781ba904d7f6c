package pgwire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// scriptConn is a connection whose server side is a fixed byte string;
// what the client writes is kept.
type scriptConn struct {
	r       io.Reader
	written bytes.Buffer
}

func (s *scriptConn) Read(b []byte) (int, error)       { return s.r.Read(b) }
func (s *scriptConn) Write(b []byte) (int, error)      { return s.written.Write(b) }
func (s *scriptConn) Close() error                     { return nil }
func (s *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (s *scriptConn) SetDeadline(time.Time) error      { return nil }
func (s *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (s *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// replying returns a session whose server answers with the bytes given.
func replying(server []byte) *Conn {
	c := &scriptConn{r: bytes.NewReader(server)}
	return &Conn{c: c, r: bufio.NewReader(c)}
}

func msg(typ byte, parts ...[]byte) []byte { return frame(typ, bytes.Join(parts, nil)) }

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func cs(s string) []byte  { return append([]byte(s), 0) }

var ready = msg('Z', []byte("I"))

func TestStartupMD5SendsThePasswordHashAndWaitsForReady(t *testing.T) {
	server := bytes.Join([][]byte{
		msg('R', u32(5), []byte{1, 2, 3, 4}),
		msg('R', u32(0)),
		msg('S', cs("server_version"), cs("15")),
		msg('K', u32(7), u32(8)),
		ready,
	}, nil)
	c := &scriptConn{r: bytes.NewReader(server)}
	if _, err := Startup(c, "postgres", "postgres", "secret"); err != nil {
		t.Fatal(err)
	}
	// The hash was computed independently (python hashlib) for user
	// postgres, password secret, salt 01020304.
	want := frame('p', cs("md5bb41a296aab6baccb36ff243a562abff"))
	if !bytes.Contains(c.written.Bytes(), want) {
		t.Fatalf("client wrote %q, want it to hold %q", c.written.Bytes(), want)
	}
	startup := c.written.Bytes()
	if v := binary.BigEndian.Uint32(startup[4:8]); v != 3<<16 {
		t.Fatalf("protocol version %#x, want 3.0", v)
	}
	if !bytes.Contains(startup, []byte("user\x00postgres\x00database\x00postgres\x00")) {
		t.Fatalf("start-up message %q lacks user and database", startup)
	}
}

func TestStartupRefusesSCRAMWithAMessageSayingWhatToDo(t *testing.T) {
	c := &scriptConn{r: bytes.NewReader(msg('R', u32(10), cs("SCRAM-SHA-256"), []byte{0}))}
	_, err := Startup(c, "u", "d", "")
	if err == nil || !strings.Contains(err.Error(), "pg_hba.conf") {
		t.Fatalf("err = %v, want a message naming pg_hba.conf", err)
	}
}

func TestStartupReturnsTheServersError(t *testing.T) {
	c := &scriptConn{r: bytes.NewReader(msg('E', []byte("SFATAL\x00C57P03\x00Mthe database system is starting up\x00\x00")))}
	_, err := Startup(c, "u", "d", "")
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != "57P03" || pe.Severity != "FATAL" {
		t.Fatalf("err = %v, want *Error 57P03", err)
	}
}

func TestQueryReturnsRowsWithNullsTagsAndStatementErrors(t *testing.T) {
	server := bytes.Join([][]byte{
		msg('T', u16(0)),
		msg('D', u16(2), u32(2), []byte("42"), u32(0xffffffff)),
		msg('D', u16(2), u32(0), u32(1), []byte("x")),
		msg('C', cs("SELECT 2")),
		ready,
		msg('E', []byte("SERROR\x00C23505\x00Mduplicate key\x00\x00")),
		ready,
	}, nil)
	pc := replying(server)
	res, err := pc.Query("SELECT 1")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 2 || *res.Rows[0][0] != "42" || res.Rows[0][1] != nil || *res.Rows[1][0] != "" || *res.Rows[1][1] != "x" {
		t.Fatalf("rows %v", res.Rows)
	}
	if len(res.Tags) != 1 || res.Tags[0] != "SELECT 2" {
		t.Fatalf("tags %v", res.Tags)
	}
	_, err = pc.Query("INSERT")
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != "23505" {
		t.Fatalf("err = %v, want *Error 23505", err)
	}
}

func TestMalformedRepliesAreProtocolErrors(t *testing.T) {
	for name, server := range map[string][]byte{
		"length below 4":      {'Z', 0, 0, 0, 3},
		"length over maximum": append([]byte{'D'}, u32(MaxMessage+5)...),
		"row cut short":       msg('D', u16(3), u32(1), []byte("a")),
		"column too long":     msg('D', u16(1), u32(9), []byte("a")),
		"bytes after columns": msg('D', u16(1), u32(1), []byte("ab")),
		"tag without NUL":     msg('C', []byte("SELECT")),
		"unknown message":     msg('W', u32(0)),
		"ready too long":      msg('Z', []byte("II")),
	} {
		pc := replying(server)
		if _, err := pc.Query("SELECT 1"); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want ErrProtocol", name, err)
		}
	}
}

func TestQueryCutShortIsAnError(t *testing.T) {
	pc := replying(msg('C', cs("INSERT 0 1"))[:6])
	if _, err := pc.Query("INSERT"); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want unexpected EOF (a commit whose reply was cut is not acknowledged)", err)
	}
}

func TestQueryRefusesANulByte(t *testing.T) {
	pc := replying(nil)
	if _, err := pc.Query("SELECT 1\x00; DROP"); err == nil {
		t.Fatal("a query with a NUL byte was sent")
	}
}

func FuzzServerReplies(f *testing.F) {
	f.Add(bytes.Join([][]byte{msg('R', u32(0)), ready, msg('D', u16(1), u32(1), []byte("1")), msg('C', cs("SELECT 1")), ready}, nil))
	f.Add(bytes.Join([][]byte{msg('R', u32(5), []byte{1, 2, 3, 4}), msg('E', []byte("SERROR\x00Mx"))}, nil))
	f.Add(msg('D', u16(0xffff), u32(0x7fffffff)))
	f.Fuzz(func(t *testing.T, server []byte) {
		c := &scriptConn{r: bytes.NewReader(server)}
		pc, err := Startup(c, "u", "d", "p")
		if err != nil {
			return
		}
		for range 3 {
			if _, err := pc.Query("SELECT 1"); err != nil && !errors.As(err, new(*Error)) {
				return
			}
		}
	})
}
