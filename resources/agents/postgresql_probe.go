package agents

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"time"
)

// The readiness probe speaks just enough of the PostgreSQL frontend/
// backend protocol 3.0 (the PostgreSQL manual, "Frontend/Backend
// Protocol": "Message Flow: Start-up" and "Message Formats") to tell a
// server that accepts connections from one still starting or recovering.
// It sends a StartupMessage over the unix socket and decides on the
// server's first answer:
//
//   - AuthenticationOk (R, code 0: trust, or peer as the right user):
//     accepting connections.
//   - any other authentication request (R, code != 0): the server got past
//     its "can accept connections" check, which comes before
//     authentication; it is up, and psql (which can authenticate) decides.
//   - ErrorResponse (E) with SQLSTATE 57P03 (cannot_connect_now: "the
//     database system is starting up", "... not yet accepting
//     connections", "... is shutting down"): not accepting yet.
//   - any other ErrorResponse (a peer authentication failure when mirrord
//     probes as root, a missing database, too many clients): up; psql
//     decides.
//
// The probe never authenticates and never runs a query: Start still
// runs psql -c 'SELECT 1' once the probe says up.

// pgProtocol3 is the protocol version 3.0 of a StartupMessage.
const pgProtocol3 = 3 << 16

// pgMaxReply bounds the first message a server may send back: an
// authentication request or an ErrorResponse is well under a kilobyte.
const pgMaxReply = 16 << 10

// pgCannotConnectNow is the SQLSTATE of a server that is starting up,
// recovering or shutting down.
const pgCannotConnectNow = "57P03"

// pgVerdict is what the server's first answer says.
type pgVerdict int

const (
	pgStarting pgVerdict = iota // 57P03: not accepting connections yet
	pgUp                        // accepts connections (authenticated or not)
)

// pgReply is the decoded first answer of the server.
type pgReply struct {
	verdict  pgVerdict
	authCode uint32 // for an R message: 0 ok, 10 SASL, 5 MD5, ...
	sqlstate string // for an E message
	message  string // for an E message: the M field
}

// pgStartupMessage encodes a protocol 3.0 StartupMessage for user and
// database. Names with a NUL byte cannot be sent.
func pgStartupMessage(user, database string) ([]byte, error) {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 0, 0}) // length, filled in below
	binary.Write(&b, binary.BigEndian, uint32(pgProtocol3))
	for _, kv := range [][2]string{{"user", user}, {"database", database}, {"application_name", "hamirror-probe"}} {
		if bytes.IndexByte([]byte(kv[1]), 0) >= 0 {
			return nil, fmt.Errorf("the %s name contains a NUL byte", kv[0])
		}
		b.WriteString(kv[0])
		b.WriteByte(0)
		b.WriteString(kv[1])
		b.WriteByte(0)
	}
	b.WriteByte(0)
	out := b.Bytes()
	binary.BigEndian.PutUint32(out, uint32(len(out)))
	return out, nil
}

// readPGMessage reads one backend message: a type byte, an int32 length
// that counts itself, and the body. It refuses a length below 4 or above
// pgMaxReply.
func readPGMessage(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, fmt.Errorf("reading a message header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n < 4 || n-4 > pgMaxReply {
		return 0, nil, fmt.Errorf("message %q has a bad length %d", hdr[0], n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("reading a %q message of %d bytes: %w", hdr[0], n, err)
	}
	return hdr[0], body, nil
}

// decodePGReply decodes the server's first answer to a StartupMessage.
func decodePGReply(typ byte, body []byte) (pgReply, error) {
	switch typ {
	case 'R':
		if len(body) < 4 {
			return pgReply{}, fmt.Errorf("authentication request of %d bytes, want at least 4", len(body))
		}
		code := binary.BigEndian.Uint32(body)
		if code == 0 && len(body) != 4 {
			return pgReply{}, fmt.Errorf("AuthenticationOk of %d bytes, want 4", len(body))
		}
		return pgReply{verdict: pgUp, authCode: code}, nil
	case 'E':
		fields, err := parsePGErrorFields(body)
		if err != nil {
			return pgReply{}, err
		}
		code := fields['C']
		if len(code) != 5 {
			return pgReply{}, fmt.Errorf("ErrorResponse without a 5-character SQLSTATE (%q): %q", code, fields['M'])
		}
		r := pgReply{verdict: pgUp, sqlstate: code, message: fields['M']}
		if code == pgCannotConnectNow {
			r.verdict = pgStarting
		}
		return r, nil
	}
	return pgReply{}, fmt.Errorf("unexpected message %q in answer to a StartupMessage", typ)
}

// parsePGErrorFields splits the body of an ErrorResponse: fields of a
// type byte and a NUL-terminated string, ended by a lone NUL byte and
// followed by nothing.
func parsePGErrorFields(b []byte) (map[byte]string, error) {
	fields := map[byte]string{}
	for {
		if len(b) == 0 {
			return nil, errors.New("ErrorResponse without its terminating NUL")
		}
		t := b[0]
		b = b[1:]
		if t == 0 {
			if len(b) != 0 {
				return nil, fmt.Errorf("ErrorResponse with %d bytes after its terminator", len(b))
			}
			return fields, nil
		}
		end := bytes.IndexByte(b, 0)
		if end < 0 {
			return nil, fmt.Errorf("ErrorResponse field %q is not NUL-terminated", t)
		}
		fields[t] = string(b[:end])
		b = b[end+1:]
	}
}

// probe connects to the server's unix socket and asks it for a session
// as the configured user and database (see the comment at the top of
// this file). It returns an error when the socket does not answer or
// answers nonsense: a server not started yet.
func (a *pgAgent) probe(ctx context.Context) (pgReply, error) {
	msg, err := pgStartupMessage(a.user, a.database)
	if err != nil {
		return pgReply{}, err
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	sock := filepath.Join(a.sockdir, ".s.PGSQL."+strconv.Itoa(a.port))
	var d net.Dialer
	conn, err := d.DialContext(pctx, "unix", sock)
	if err != nil {
		return pgReply{}, err
	}
	defer conn.Close()
	if dl, ok := pctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write(msg); err != nil {
		return pgReply{}, fmt.Errorf("sending the startup message: %w", err)
	}
	typ, body, err := readPGMessage(conn)
	if err != nil {
		return pgReply{}, err
	}
	r, err := decodePGReply(typ, body)
	if err == nil && typ == 'R' && r.authCode == 0 {
		conn.Write([]byte{'X', 0, 0, 0, 4}) // Terminate: a clean goodbye in the server log
	}
	return r, err
}
