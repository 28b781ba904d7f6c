package agents

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// pgMsg builds a backend message: type, int32 length counting itself, body.
func pgMsg(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

// pgError builds an ErrorResponse body from type/value pairs.
func pgError(kv ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, kv[i][0])
		b = append(b, kv[i+1]...)
		b = append(b, 0)
	}
	return append(b, 0)
}

func TestPGStartupMessage(t *testing.T) {
	got, err := pgStartupMessage("postgres", "db")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0, 0, 0, 0, 0, 3, 0, 0}
	want = append(want, "user\x00postgres\x00database\x00db\x00application_name\x00hamirror-probe\x00\x00"...)
	binary.BigEndian.PutUint32(want, uint32(len(want)))
	if !bytes.Equal(got, want) {
		t.Fatalf("startup message\n got %q\nwant %q", got, want)
	}
	if _, err := pgStartupMessage("post\x00gres", "db"); err == nil {
		t.Fatal("a user name with a NUL byte was encoded")
	}
}

func TestDecodePGReply(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wire    []byte
		verdict pgVerdict
		state   string
		err     string
	}{
		{"auth ok (trust, peer as the right user)", pgMsg('R', []byte{0, 0, 0, 0}), pgUp, "", ""},
		{"SASL asked: up, psql decides", pgMsg('R', append([]byte{0, 0, 0, 10}, "SCRAM-SHA-256\x00\x00"...)), pgUp, "", ""},
		{"md5 asked", pgMsg('R', []byte{0, 0, 0, 5, 1, 2, 3, 4}), pgUp, "", ""},
		{"starting up", pgMsg('E', pgError("S", "FATAL", "C", "57P03", "M", "the database system is starting up")), pgStarting, "57P03", ""},
		{"peer auth failed: up", pgMsg('E', pgError("S", "FATAL", "C", "28000", "M", "Peer authentication failed")), pgUp, "28000", ""},
		{"no such database: up", pgMsg('E', pgError("C", "3D000", "M", "database \"x\" does not exist")), pgUp, "3D000", ""},
		{"auth ok with trailing bytes", pgMsg('R', []byte{0, 0, 0, 0, 9}), 0, "", "want 4"},
		{"short auth", pgMsg('R', []byte{0, 0}), 0, "", "at least 4"},
		{"error without SQLSTATE", pgMsg('E', pgError("M", "x")), 0, "", "SQLSTATE"},
		{"error field unterminated", pgMsg('E', []byte("C57P03")), 0, "", "not NUL-terminated"},
		{"error without terminator", pgMsg('E', []byte("C57P03\x00")), 0, "", "terminating NUL"},
		{"error with trailing bytes", pgMsg('E', append(pgError("C", "57P03"), 'x')), 0, "", "after its terminator"},
		{"unexpected type", pgMsg('Z', []byte{'I'}), 0, "", "unexpected message"},
		{"length below 4", []byte{'R', 0, 0, 0, 3}, 0, "", "bad length"},
		{"huge length", []byte{'E', 0x7f, 0xff, 0xff, 0xff}, 0, "", "bad length"},
		{"truncated body", []byte{'R', 0, 0, 0, 8, 0, 0}, 0, "", "reading"},
		{"truncated header", []byte{'R', 0}, 0, "", "header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodePGWire(tc.wire)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.verdict != tc.verdict || r.sqlstate != tc.state {
				t.Fatalf("got %+v, want verdict %d sqlstate %q", r, tc.verdict, tc.state)
			}
		})
	}
}

// decodePGWire reads and decodes one message from b.
func decodePGWire(b []byte) (pgReply, error) {
	typ, body, err := readPGMessage(bytes.NewReader(b))
	if err != nil {
		return pgReply{}, err
	}
	return decodePGReply(typ, body)
}

func FuzzDecodePGReply(f *testing.F) {
	f.Add(pgMsg('R', []byte{0, 0, 0, 0}))
	f.Add(pgMsg('R', append([]byte{0, 0, 0, 10}, "SCRAM-SHA-256\x00\x00"...)))
	f.Add(pgMsg('E', pgError("S", "FATAL", "V", "FATAL", "C", "57P03", "M", "the database system is starting up", "F", "postmaster.c", "L", "2427", "R", "ProcessStartupPacket")))
	f.Add(pgMsg('E', pgError("C", "28000", "M", "Peer authentication failed for user \"postgres\"")))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePGWire(b)
		if err != nil {
			return
		}
		if r.verdict == pgStarting && r.sqlstate != pgCannotConnectNow {
			t.Fatalf("starting without SQLSTATE 57P03: %+v", r)
		}
		if r.sqlstate != "" && len(r.sqlstate) != 5 {
			t.Fatalf("accepted SQLSTATE %q", r.sqlstate)
		}
	})
}
