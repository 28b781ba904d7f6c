package iscsi

import (
	"encoding/binary"
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

// PERSISTENT RESERVE service actions.
const (
	prInReadKeys        = 0
	prInReadReservation = 1

	prOutRegister          = 0
	prOutReserve           = 1
	prOutRelease           = 2
	prOutClear             = 3
	prOutPreempt           = 4
	prOutPreemptAndAbort   = 5
	prOutRegisterAndIgnore = 6
)

// Reservation is the current persistent reservation (Key 0: none).
type Reservation struct {
	Generation uint32
	Key        uint64
	Type       ReservationType
	Held       bool
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

// ReadKeys returns the registered reservation keys and the PR generation.
func (d *Disk) ReadKeys() (generation uint32, keys []uint64, err error) {
	buf := make([]byte, 8+8*128)
	res, err := d.do(command{Op: "PERSISTENT RESERVE IN (READ KEYS)", CDB: cdbPRIn(prInReadKeys, uint16(len(buf))), Read: buf})
	if err != nil {
		return 0, nil, err
	}
	return decodeReadKeys(buf[:res.Received])
}

// ReadReservation returns the current reservation, if any.
func (d *Disk) ReadReservation() (Reservation, error) {
	buf := make([]byte, 24)
	res, err := d.do(command{Op: "PERSISTENT RESERVE IN (READ RESERVATION)", CDB: cdbPRIn(prInReadReservation, uint16(len(buf))), Read: buf})
	if err != nil {
		return Reservation{}, err
	}
	return decodeReadReservation(buf[:res.Received])
}

func (d *Disk) prOut(name string, sa byte, typ ReservationType, key, saKey uint64) error {
	_, err := d.do(command{Op: "PERSISTENT RESERVE OUT (" + name + ")", CDB: cdbPROut(sa, typ), Write: prOutParams(key, saKey)})
	return err
}

// Register registers newKey for this I_T nexus (oldKey 0 when not yet
// registered); newKey 0 unregisters.
func (d *Disk) Register(oldKey, newKey uint64) error {
	return d.prOut("REGISTER", prOutRegister, 0, oldKey, newKey)
}

// RegisterAndIgnore registers newKey whatever key is registered now.
func (d *Disk) RegisterAndIgnore(newKey uint64) error {
	return d.prOut("REGISTER AND IGNORE EXISTING KEY", prOutRegisterAndIgnore, 0, 0, newKey)
}

// Reserve takes a reservation of type t with our registered key.
func (d *Disk) Reserve(key uint64, t ReservationType) error {
	return d.prOut("RESERVE", prOutReserve, t, key, 0)
}

// Release releases our reservation of type t.
func (d *Disk) Release(key uint64, t ReservationType) error {
	return d.prOut("RELEASE", prOutRelease, t, key, 0)
}

// Clear removes every registration and the reservation.
func (d *Disk) Clear(key uint64) error {
	return d.prOut("CLEAR", prOutClear, 0, key, 0)
}

// Preempt removes the registrations of victimKey and, if it held the
// reservation, takes it over with type t.
func (d *Disk) Preempt(key, victimKey uint64, t ReservationType) error {
	return d.prOut("PREEMPT", prOutPreempt, t, key, victimKey)
}

// PreemptAndAbort is Preempt that also aborts the victim's outstanding commands.
func (d *Disk) PreemptAndAbort(key, victimKey uint64, t ReservationType) error {
	return d.prOut("PREEMPT AND ABORT", prOutPreemptAndAbort, t, key, victimKey)
}
