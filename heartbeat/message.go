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

// Heartbeat is the payload of MsgHeartbeat.
type Heartbeat struct {
	Role         Role
	HasPing      bool  // ping targets are configured on the sender
	PingScore    uint8 // ping targets the sender reaches
	TableVersion uint64
}

const heartbeatLen = 11

// MarshalBinary encodes h.
func (h Heartbeat) MarshalBinary() []byte {
	b := make([]byte, 0, heartbeatLen)
	var flags byte
	if h.HasPing {
		flags |= 1
	}
	b = append(b, byte(h.Role), flags, h.PingScore)
	return binary.BigEndian.AppendUint64(b, h.TableVersion)
}

// UnmarshalHeartbeat decodes a heartbeat payload strictly.
func UnmarshalHeartbeat(p []byte) (Heartbeat, error) {
	var h Heartbeat
	if len(p) != heartbeatLen {
		return h, fmt.Errorf("%w: heartbeat payload is %d bytes, want %d", ErrMalformed, len(p), heartbeatLen)
	}
	if p[0] > byte(RoleActive) || p[1]&^1 != 0 {
		return h, fmt.Errorf("%w: heartbeat role %d flags %#x", ErrMalformed, p[0], p[1])
	}
	h.Role, h.HasPing, h.PingScore = Role(p[0]), p[1]&1 != 0, p[2]
	h.TableVersion = binary.BigEndian.Uint64(p[3:])
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
		if na > 8 {
			return t, fmt.Errorf("%w: %d addresses in a row", ErrMalformed, na)
		}
		for j := 0; j < na && r.err == nil; j++ {
			row.Addresses = append(row.Addresses, r.str(64, false))
		}
		row.BackupTarget = NodeID(r.str(64, true))
		row.BackupAddr = r.str(64, true)
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
