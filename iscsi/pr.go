package iscsi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ReservationType is a SCSI-3 persistent reservation type (SPC-4 6.16).
type ReservationType byte

const (
	WriteExclusive                 ReservationType = 1
	ExclusiveAccess                ReservationType = 3
	WriteExclusiveRegistrantsOnly  ReservationType = 5
	ExclusiveAccessRegistrantsOnly ReservationType = 6
	WriteExclusiveAllRegistrants   ReservationType = 7
	ExclusiveAccessAllRegistrants  ReservationType = 8
)

// String is the type's short name as sg_persist prints it: WE, EA, WE-RO,
// EA-RO, WE-AR, EA-AR.
func (t ReservationType) String() string {
	switch t {
	case WriteExclusive:
		return "WE"
	case ExclusiveAccess:
		return "EA"
	case WriteExclusiveRegistrantsOnly:
		return "WE-RO"
	case ExclusiveAccessRegistrantsOnly:
		return "EA-RO"
	case WriteExclusiveAllRegistrants:
		return "WE-AR"
	case ExclusiveAccessAllRegistrants:
		return "EA-AR"
	}
	return fmt.Sprintf("type %d", byte(t))
}

// PERSISTENT RESERVE service actions.
const (
	prInReadKeys            = 0
	prInReadReservation     = 1
	prInReportCapabilities  = 2
	prOutRegister           = 0
	prOutReserve            = 1
	prOutRelease            = 2
	prOutClear              = 3
	prOutPreempt            = 4
	prOutPreemptAndAbort    = 5
	prOutRegisterAndIgnore  = 6
	reportCapabilitiesBytes = 8
)

// Reservation is the current persistent reservation (Key 0: none).
type Reservation struct {
	Generation uint32
	Key        uint64
	Type       ReservationType
	Held       bool
}

// PRCapabilities is PERSISTENT RESERVE IN REPORT CAPABILITIES' answer
// (SPC-4 6.15.4): what the LUN's persistent reservations can do.
type PRCapabilities struct {
	// TypeMaskValid (TMV): Types lists the supported reservation types.
	// Without it the LUN said nothing about types.
	TypeMaskValid bool
	Types         []ReservationType
	// CRH: RESERVE(6)/(10) are compatible with persistent reservations.
	CRH bool
	// SIPC, ATPC: SPEC_I_PT and ALL_TG_PT are supported on REGISTER.
	SIPC, ATPC bool
	// PTPLC: reservations can persist through power loss (APTPL);
	// PTPLA: they do now.
	PTPLC, PTPLA bool
	// AllowCommands: the ALLOW COMMANDS field (which commands pass a
	// Write Exclusive reservation).
	AllowCommands byte
}

// Supports reports whether the LUN advertised reservation type t.
func (c PRCapabilities) Supports(t ReservationType) bool {
	for _, x := range c.Types {
		if x == t {
			return true
		}
	}
	return false
}

// typeMaskBits maps the PERSISTENT RESERVATION TYPE MASK (bytes 4-5, big
// endian) to the types in the order SPC-4 lists them.
var typeMaskBits = []struct {
	bit uint16
	t   ReservationType
}{
	{1 << 9, WriteExclusive}, {1 << 11, ExclusiveAccess},
	{1 << 13, WriteExclusiveRegistrantsOnly}, {1 << 14, ExclusiveAccessRegistrantsOnly},
	{1 << 15, WriteExclusiveAllRegistrants}, {1 << 0, ExclusiveAccessAllRegistrants},
}

func decodeReportCapabilities(b []byte) (PRCapabilities, error) {
	if len(b) < reportCapabilitiesBytes {
		return PRCapabilities{}, fmt.Errorf("%w: REPORT CAPABILITIES data of %d bytes", ErrProtocol, len(b))
	}
	if n := binary.BigEndian.Uint16(b); n < reportCapabilitiesBytes {
		return PRCapabilities{}, fmt.Errorf("%w: REPORT CAPABILITIES length %d", ErrProtocol, n)
	}
	c := PRCapabilities{
		CRH: b[2]&0x10 != 0, SIPC: b[2]&0x08 != 0, ATPC: b[2]&0x04 != 0, PTPLC: b[2]&0x01 != 0,
		TypeMaskValid: b[3]&0x80 != 0, AllowCommands: b[3] >> 4 & 7, PTPLA: b[3]&0x01 != 0,
	}
	if c.TypeMaskValid {
		mask := binary.BigEndian.Uint16(b[4:])
		for _, m := range typeMaskBits {
			if mask&m.bit != 0 {
				c.Types = append(c.Types, m.t)
			}
		}
	}
	return c, nil
}

func cdbPRIn(sa byte, alloc uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = scsiPRIn, sa
	binary.BigEndian.PutUint16(c[7:], alloc)
	return c
}

func cdbPROut(sa byte, typ ReservationType) []byte {
	c := make([]byte, 10)
	c[0], c[1], c[2] = scsiPROut, sa, byte(typ)&0x0f // scope LU (0)
	binary.BigEndian.PutUint32(c[5:], 24)
	return c
}

func prOutParams(key, saKey uint64) []byte {
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[0:], key)
	binary.BigEndian.PutUint64(p[8:], saKey)
	return p
}

func decodeReadKeys(b []byte) (uint32, []uint64, error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("%w: READ KEYS data of %d bytes", ErrProtocol, len(b))
	}
	gen, n := binary.BigEndian.Uint32(b), int(binary.BigEndian.Uint32(b[4:]))
	if n%8 != 0 {
		return 0, nil, fmt.Errorf("%w: READ KEYS additional length %d", ErrProtocol, n)
	}
	b = b[8:]
	if n > len(b) {
		n = len(b) - len(b)%8
	}
	var keys []uint64
	for i := 0; i < n; i += 8 {
		keys = append(keys, binary.BigEndian.Uint64(b[i:]))
	}
	return gen, keys, nil
}

func decodeReadReservation(b []byte) (Reservation, error) {
	if len(b) < 8 {
		return Reservation{}, fmt.Errorf("%w: READ RESERVATION data of %d bytes", ErrProtocol, len(b))
	}
	r := Reservation{Generation: binary.BigEndian.Uint32(b)}
	n := binary.BigEndian.Uint32(b[4:])
	if n == 0 {
		return r, nil
	}
	if n < 16 || len(b) < 24 {
		return r, fmt.Errorf("%w: READ RESERVATION additional length %d in %d bytes", ErrProtocol, n, len(b))
	}
	r.Held = true
	r.Key = binary.BigEndian.Uint64(b[8:])
	r.Type = ReservationType(b[21] & 0x0f)
	return r, nil
}

// on runs c on session s, or on the Disk's current session when s is nil
// (the reconnect path runs reservation commands on a session before it
// carries I/O).
func (d *Disk) on(s *session, c command) (result, error) {
	if s == nil {
		return d.do(c)
	}
	return d.runResult(s, c)
}

// ReadKeys returns the registered reservation keys and the PR generation.
func (d *Disk) ReadKeys() (generation uint32, keys []uint64, err error) {
	return d.readKeysOn(nil)
}

// readKeysOn reads the keys, asking again with room for all of them when
// the first answer did not fit (tgtd lists a stale registration per
// reconnect, see KeepRegistered).
func (d *Disk) readKeysOn(s *session) (uint32, []uint64, error) {
	size := 8 + 8*128
	for {
		buf := make([]byte, size)
		res, err := d.on(s, command{Op: "PERSISTENT RESERVE IN (READ KEYS)", CDB: cdbPRIn(prInReadKeys, uint16(len(buf))), Read: buf})
		if err != nil {
			return 0, nil, err
		}
		b := buf[:res.Received]
		if len(b) >= 8 && size < maxPRInBytes {
			if want := 8 + int(binary.BigEndian.Uint32(b[4:])); want > size {
				size = min(want, maxPRInBytes)
				continue
			}
		}
		return decodeReadKeys(b)
	}
}

// maxPRInBytes is the largest PERSISTENT RESERVE IN allocation length.
const maxPRInBytes = 1<<16 - 8

// ReadReservation returns the current reservation, if any.
func (d *Disk) ReadReservation() (Reservation, error) {
	buf := make([]byte, 24)
	res, err := d.do(command{Op: "PERSISTENT RESERVE IN (READ RESERVATION)", CDB: cdbPRIn(prInReadReservation, uint16(len(buf))), Read: buf})
	if err != nil {
		return Reservation{}, err
	}
	return decodeReadReservation(buf[:res.Received])
}

// ReportCapabilities asks the LUN what its persistent reservations can
// do. A LUN without persistent reservations answers ILLEGAL REQUEST
// (ErrIllegalRequest).
func (d *Disk) ReportCapabilities() (PRCapabilities, error) {
	buf := make([]byte, reportCapabilitiesBytes)
	res, err := d.do(command{Op: "PERSISTENT RESERVE IN (REPORT CAPABILITIES)", CDB: cdbPRIn(prInReportCapabilities, uint16(len(buf))), Read: buf})
	if err != nil {
		return PRCapabilities{}, err
	}
	return decodeReportCapabilities(buf[:res.Received])
}

func (d *Disk) prOut(s *session, name string, sa byte, typ ReservationType, key, saKey uint64) error {
	_, err := d.on(s, command{Op: "PERSISTENT RESERVE OUT (" + name + ")", CDB: cdbPROut(sa, typ), Write: prOutParams(key, saKey)})
	var se *SenseError
	if errors.As(err, &se) && se.Key == SenseNotReady && se.ASC == 0x08 && se.ASCQ == 0 {
		// LOGICAL UNIT COMMUNICATION FAILURE on a PR OUT: Linux LIO
		// applied the change but could not write its state file.
		return fmt.Errorf("%w: the array could not save its persistent reservation state and may have applied the change anyway; "+
			"a Linux LIO array answers so when its PR folder is missing: create db_root/pr on the array "+
			"(/var/target/pr, or /etc/target/pr; see /sys/kernel/config/target/dbroot)", err)
	}
	return err
}

// Register registers newKey for this I_T nexus (oldKey 0 when not yet
// registered); newKey 0 unregisters.
func (d *Disk) Register(oldKey, newKey uint64) error {
	return d.prOut(nil, "REGISTER", prOutRegister, 0, oldKey, newKey)
}

// RegisterAndIgnore registers newKey whatever key is registered now.
func (d *Disk) RegisterAndIgnore(newKey uint64) error {
	return d.prOut(nil, "REGISTER AND IGNORE EXISTING KEY", prOutRegisterAndIgnore, 0, 0, newKey)
}

// Reserve takes a reservation of type t with our registered key.
func (d *Disk) Reserve(key uint64, t ReservationType) error {
	return d.prOut(nil, "RESERVE", prOutReserve, t, key, 0)
}

// Release releases our reservation of type t.
func (d *Disk) Release(key uint64, t ReservationType) error {
	return d.prOut(nil, "RELEASE", prOutRelease, t, key, 0)
}

// Clear removes every registration and the reservation.
func (d *Disk) Clear(key uint64) error {
	return d.prOut(nil, "CLEAR", prOutClear, 0, key, 0)
}

// Preempt removes the registrations of victimKey and, if it held the
// reservation, takes it over with type t.
func (d *Disk) Preempt(key, victimKey uint64, t ReservationType) error {
	return d.prOut(nil, "PREEMPT", prOutPreempt, t, key, victimKey)
}

// PreemptAndAbort is Preempt that also aborts the victim's outstanding commands.
func (d *Disk) PreemptAndAbort(key, victimKey uint64, t ReservationType) error {
	return d.prOut(nil, "PREEMPT AND ABORT", prOutPreemptAndAbort, t, key, victimKey)
}
