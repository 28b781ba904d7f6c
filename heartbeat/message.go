package heartbeat

import (
	"encoding/binary"
	"fmt"
)

// Role is a node's proposed role. Roles are proposals to the resources
// layer, which fences the old owner before acting on "active".
type Role uint8

const (
	RoleNone    Role = 0 // starting: waiting for peers or for initdead
	RoleStandby Role = 1
	RoleActive  Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleNone:
		return "none"
	case RoleStandby:
		return "standby"
	case RoleActive:
		return "active"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Heartbeat is the payload of MsgHeartbeat: what a node advertises to
// its peers in every heartbeat frame, on every medium.
//
// Wire format (frame version 3; all integers big-endian):
//
//	0   8  round: the sender's send round in this run; every frame of one
//	       round carries the same round on every medium, and it grows by
//	       one per round, so a receiver takes a payload only if it is not
//	       older than one it already took (a frame delayed on a slow
//	       medium cannot bring back an old role or app state)
//	8   8  term: while the sender proposes active, the term of that claim;
//	       otherwise the highest term it knows (roles.go)
//	16  1  role (0 none, 1 standby, 2 active)
//	17  1  flags: bit 0 ping targets configured, bit 1 eligible for the
//	       active role; the other bits must be zero
//	18  1  ping score (public ping targets the sender reaches)
//	19  8  index table version the sender holds
//	27  2  app state length A (0..MaxAppState)
//	29  A  app state: opaque to the heartbeat (the resources layer's blob)
//
// The largest payload is 29 + MaxAppState bytes. (The term was added
// before frame version 3 was released: a payload without it, 21 + A
// bytes, is refused by its length.)
type Heartbeat struct {
	Round uint64
	// Term is the sender's takeover term: the term of its claim while it
	// proposes active, otherwise the highest term it knows (roles.go).
	Term         uint64
	Role         Role
	HasPing      bool  // ping targets are configured on the sender
	Eligible     bool  // the sender may hold the active role (Machine.SetEligible)
	PingScore    uint8 // ping targets the sender reaches
	TableVersion uint64
	App          []byte // the sender's app state (Machine.SetAppState)
}

// MaxAppState bounds the app state a node advertises (SetAppState).
const MaxAppState = 512

const (
	heartbeatFixed = 29 // payload bytes before the app state
	flagPing       = 1 << 0
	flagEligible   = 1 << 1
)

// MarshalBinary encodes h (App must be at most MaxAppState bytes; the
// Machine never builds a longer one).
func (h Heartbeat) MarshalBinary() []byte {
	b := make([]byte, 0, heartbeatFixed+len(h.App))
	var flags byte
	if h.HasPing {
		flags |= flagPing
	}
	if h.Eligible {
		flags |= flagEligible
	}
	b = binary.BigEndian.AppendUint64(b, h.Round)
	b = binary.BigEndian.AppendUint64(b, h.Term)
	b = append(b, byte(h.Role), flags, h.PingScore)
	b = binary.BigEndian.AppendUint64(b, h.TableVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.App)))
	return append(b, h.App...)
}

// UnmarshalHeartbeat decodes a heartbeat payload strictly: every length
// must match, unknown roles and flags are refused.
func UnmarshalHeartbeat(p []byte) (Heartbeat, error) {
	var h Heartbeat
	if len(p) < heartbeatFixed {
		return h, fmt.Errorf("%w: heartbeat payload is %d bytes, want at least %d", ErrMalformed, len(p), heartbeatFixed)
	}
	role, flags := p[16], p[17]
	if role > byte(RoleActive) || flags&^(flagPing|flagEligible) != 0 {
		return h, fmt.Errorf("%w: heartbeat role %d flags %#x", ErrMalformed, role, flags)
	}
	n := int(binary.BigEndian.Uint16(p[27:]))
	if n > MaxAppState || len(p) != heartbeatFixed+n {
		return h, fmt.Errorf("%w: heartbeat app state of %d bytes in a %d byte payload (at most %d)", ErrMalformed, n, len(p), MaxAppState)
	}
	h.Round, h.Term = binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:])
	if h.Term > maxTerm { // LoadTerm would refuse it as corrupt at the next start
		return h, fmt.Errorf("%w: heartbeat term %d (at most %d)", ErrMalformed, h.Term, uint64(maxTerm))
	}
	h.Role, h.HasPing, h.Eligible, h.PingScore = Role(role), flags&flagPing != 0, flags&flagEligible != 0, p[18]
	h.TableVersion = binary.BigEndian.Uint64(p[19:])
	if n > 0 {
		h.App = append([]byte(nil), p[heartbeatFixed:]...)
	}
	return h, nil
}

// NodeState in the index table (R7).
type TableState uint8

const (
	Normal TableState = 0
	Failed TableState = 1
)

func (s TableState) String() string {
	if s == Failed {
		return "Failed"
	}
	return "Normal"
}

// MarshalText lets the state appear as "Normal"/"Failed" in JSON.
func (s TableState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses "Normal"/"Failed".
func (s *TableState) UnmarshalText(b []byte) error {
	switch string(b) {
	case "Normal":
		*s = Normal
	case "Failed":
		*s = Failed
	default:
		return fmt.Errorf("index table state %q: want Normal or Failed", b)
	}
	return nil
}

// Row is one line of the index table (R7).
type Row struct {
	ID           NodeID     `json:"id"`
	Addresses    []string   `json:"addresses"`
	BackupTarget NodeID     `json:"backup_target"`    // "" when no other node is Normal
	BackupAddr   string     `json:"backup_target_ip"` // the target's first address
	State        TableState `json:"state"`
}

// Table is the index table the coordinator builds and sends to all nodes.
type Table struct {
	Version     uint64 `json:"version"`
	Coordinator NodeID `json:"coordinator"`
	Rows        []Row  `json:"rows"`
}

// Index table limits: UnmarshalTable refuses more (Config.Validate
// keeps a cluster within them).
const (
	maxRowAddrs = 8  // addresses of one row
	maxTableStr = 64 // bytes of a node ID or an address
)

type wbuf []byte

func (w *wbuf) str(s string) { *w = append(*w, byte(len(s))); *w = append(*w, s...) }

// MarshalBinary encodes t (names are at most 64 bytes, at most 8
// addresses per row, at most 64 rows: the config enforces this).
func (t Table) MarshalBinary() []byte {
	w := wbuf(binary.BigEndian.AppendUint64(nil, t.Version))
	w.str(string(t.Coordinator))
	w = append(w, byte(len(t.Rows)))
	for _, r := range t.Rows {
		w.str(string(r.ID))
		w = append(w, byte(len(r.Addresses)))
		for _, a := range r.Addresses {
			w.str(a)
		}
		w.str(string(r.BackupTarget))
		w.str(r.BackupAddr)
		w = append(w, byte(r.State))
	}
	return w
}

// rbuf is a reader with a sticky error: after the first short read every
// further read returns zero values and err stays set.
type rbuf struct {
	p   []byte
	err error
}

func (r *rbuf) need(n int) bool {
	if r.err == nil && len(r.p) < n {
		r.err = fmt.Errorf("%w: table truncated", ErrMalformed)
	}
	return r.err == nil
}

func (r *rbuf) u8() byte {
	if !r.need(1) {
		return 0
	}
	b := r.p[0]
	r.p = r.p[1:]
	return b
}

func (r *rbuf) str(max int, empty bool) string {
	n := int(r.u8())
	if r.err == nil && (n > max || (n == 0 && !empty)) {
		r.err = fmt.Errorf("%w: table string length %d", ErrMalformed, n)
	}
	if !r.need(n) {
		return ""
	}
	s := string(r.p[:n])
	r.p = r.p[n:]
	return s
}

// UnmarshalTable decodes a table payload strictly.
func UnmarshalTable(p []byte) (Table, error) {
	var t Table
	r := &rbuf{p: p}
	if !r.need(8) {
		return t, r.err
	}
	t.Version = binary.BigEndian.Uint64(r.p)
	r.p = r.p[8:]
	t.Coordinator = NodeID(r.str(64, false))
	n := int(r.u8())
	if n > 64 {
		return t, fmt.Errorf("%w: %d table rows", ErrMalformed, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		var row Row
		row.ID = NodeID(r.str(64, false))
		na := int(r.u8())
		if na > maxRowAddrs {
			return t, fmt.Errorf("%w: %d addresses in a row", ErrMalformed, na)
		}
		for j := 0; j < na && r.err == nil; j++ {
			row.Addresses = append(row.Addresses, r.str(maxTableStr, false))
		}
		row.BackupTarget = NodeID(r.str(maxTableStr, true))
		row.BackupAddr = r.str(maxTableStr, true)
		st := r.u8()
		if st > 1 && r.err == nil {
			r.err = fmt.Errorf("%w: row state %d", ErrMalformed, st)
		}
		row.State = TableState(st)
		t.Rows = append(t.Rows, row)
	}
	if r.err == nil && len(r.p) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes after the table", ErrMalformed, len(r.p))
	}
	if r.err != nil {
		return Table{}, r.err
	}
	return t, nil
}
