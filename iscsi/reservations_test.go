package iscsi

import (
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const (
	key1, key2 = 0x1111, 0x2222
	werO       = WriteExclusiveRegistrantsOnly
)

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestDecodeReportCapabilities(t *testing.T) {
	// tgtd 1.0.85's answer: TMV and all six types, nothing else.
	c, err := decodeReportCapabilities([]byte{0, 8, 0, 0x80, 0xea, 0x01, 0, 0})
	must(t, "decode", err)
	want := []ReservationType{WriteExclusive, ExclusiveAccess, WriteExclusiveRegistrantsOnly,
		ExclusiveAccessRegistrantsOnly, WriteExclusiveAllRegistrants, ExclusiveAccessAllRegistrants}
	if !c.TypeMaskValid || !slices.Equal(c.Types, want) || c.PTPLC || c.CRH {
		t.Fatalf("tgtd capabilities %+v", c)
	}
	// Flags, and a type mask that is not valid (TMV 0) means no types.
	c, err = decodeReportCapabilities([]byte{0, 8, 0x1d, 0x31, 0xff, 0xff, 0, 0})
	must(t, "decode flags", err)
	if c.TypeMaskValid || c.Types != nil || !c.CRH || !c.SIPC || !c.ATPC || !c.PTPLC || !c.PTPLA || c.AllowCommands != 3 {
		t.Fatalf("flags %+v", c)
	}
	if c.Supports(WriteExclusiveRegistrantsOnly) {
		t.Fatal("a mask that is not valid still advertised WE-RO")
	}
	// Only WE-RO: the one fencing needs.
	c, _ = decodeReportCapabilities([]byte{0, 8, 0, 0x80, 0x20, 0, 0, 0})
	if !c.Supports(WriteExclusiveRegistrantsOnly) || c.Supports(WriteExclusive) {
		t.Fatalf("WE-RO only: %+v", c)
	}
	for _, bad := range [][]byte{nil, {0, 8, 0, 0x80}, {0, 4, 0, 0x80, 0xea, 1, 0, 0}} {
		if _, err := decodeReportCapabilities(bad); !errors.Is(err, ErrProtocol) {
			t.Errorf("%x: %v, want ErrProtocol", bad, err)
		}
	}
	if s := WriteExclusiveRegistrantsOnly.String() + " " + ReservationType(9).String(); s != "WE-RO type 9" {
		t.Fatalf("names %q", s)
	}
}

func TestReportCapabilitiesOnTheWire(t *testing.T) {
	m := newPRModel()
	d, _ := m.openOn(t, "n1", Config{})
	c, err := d.ReportCapabilities()
	must(t, "REPORT CAPABILITIES", err)
	if !c.Supports(WriteExclusiveRegistrantsOnly) {
		t.Fatalf("capabilities %+v", c)
	}
	// A LUN without persistent reservations refuses the command.
	plain, _ := startFake(t, Config{}, nil, onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		return []*PDU{f.response(p, statusCheckCondition, fixedSense(SenseIllegalRequest, 0x20, 0))}
	}))
	if _, err := plain.ReportCapabilities(); !errors.Is(err, ErrIllegalRequest) {
		t.Fatalf("no PR support: %v, want ErrIllegalRequest", err)
	}
}

// The LIO-like path: PREEMPT AND ABORT works. The victim's write queued at
// the target ends with TASK ABORTED; the initiator sends it again, absorbs
// the UNIT ATTENTION 2A/05 (registrations preempted) and reports the
// RESERVATION CONFLICT that says the node was fenced.
func TestPreemptAndAbortFencesAQueuedWrite(t *testing.T) {
	m := newPRModel()
	n1, _ := m.openOn(t, "n1", Config{})
	n2, _ := m.openOn(t, "n2", Config{})
	must(t, "n1 register", n1.EnsureRegistered(key1))
	must(t, "n2 register", n2.EnsureRegistered(key2))
	must(t, "n1 reserve", n1.Reserve(key1, werO))
	m.mu.Lock()
	m.hold = true
	m.mu.Unlock()
	written := make(chan error, 1)
	go func() { written <- n1.WriteAt(make([]byte, 512), 0, false) }()
	waitFor(t, func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.held) == 1 })
	m.ops()
	aborted, err := n2.PreemptAbort(key2, key1, werO)
	must(t, "preempt and abort", err)
	if !aborted || !slices.Equal(m.ops(), []string{"PREEMPT AND ABORT"}) {
		t.Fatalf("aborted %v, want the PREEMPT AND ABORT alone to do it", aborted)
	}
	select {
	case err := <-written:
		if !errors.Is(err, ErrReservationConflict) {
			t.Fatalf("victim's queued write: %v, want ErrReservationConflict", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("victim's queued write never ended")
	}
	if st := n1.Stats(); st.Aborted != 1 || st.LastUnitAttention != 0x2a05 {
		t.Fatalf("victim stats %+v, want one TASK ABORTED retried and UA 2A/05 absorbed", st)
	}
	if _, keys, holder := m.state(); holder != key2 || !slices.Equal(keys, []uint64{key2}) {
		t.Fatalf("after the preempt: keys %x, holder %x", keys, holder)
	}
}

// tgtd 1.0.85 refuses PREEMPT AND ABORT (ILLEGAL REQUEST 24/00): plain
// PREEMPT does the fencing, and PreemptAbort says so.
func TestPreemptAbortFallsBackToPreempt(t *testing.T) {
	m := newPRModel()
	m.noPreemptAbrt = true
	n1, _ := m.openOn(t, "n1", Config{})
	n2, _ := m.openOn(t, "n2", Config{})
	must(t, "n1 register", n1.EnsureRegistered(key1))
	must(t, "n2 register", n2.EnsureRegistered(key2))
	must(t, "n1 reserve", n1.Reserve(key1, werO))
	m.ops()
	aborted, err := n2.PreemptAbort(key2, key1, werO)
	must(t, "preempt with fallback", err)
	if got := m.ops(); aborted || !slices.Equal(got, []string{"PREEMPT AND ABORT", "PREEMPT"}) {
		t.Fatalf("aborted %v, commands %q, want the fallback to PREEMPT", aborted, got)
	}
	if err := n1.WriteAt(make([]byte, 512), 0, false); !errors.Is(err, ErrReservationConflict) {
		t.Fatalf("fenced write: %v", err)
	}
	// Any other refusal is not a reason to try PREEMPT: an unregistered
	// node's PREEMPT AND ABORT conflicts, and that is the answer.
	m.noPreemptAbrt = false
	if _, err := n1.PreemptAbort(key1, key2, werO); !errors.Is(err, ErrReservationConflict) {
		t.Fatalf("preempt by a fenced node: %v, want ErrReservationConflict", err)
	}
	if got := m.ops(); !slices.Equal(got, []string{"PREEMPT AND ABORT"}) {
		t.Fatalf("commands %q, want no fallback after a conflict", got)
	}
}

// UNIT ATTENTIONs of the reservation family raised by another node's
// changes are absorbed on the reservation commands themselves: the command
// is sent again and succeeds.
func TestReservationCommandsAbsorbUnitAttention(t *testing.T) {
	m := newPRModel()
	n1, f := m.openOn(t, "n1", Config{})
	must(t, "register", n1.EnsureRegistered(key1))
	for _, ua := range [][]byte{{0x2a, 0x03}, {0x2a, 0x04}, {0x2a, 0x05}} {
		nexus := m.nexus(f)
		m.mu.Lock()
		m.ua[nexus] = ua
		m.mu.Unlock()
		before := n1.Stats().UnitAttentions
		if _, err := n1.PreemptAbort(key1, key1, werO); err != nil {
			t.Fatalf("PREEMPT after UA %x: %v", ua, err)
		}
		if st := n1.Stats(); st.UnitAttentions != before+1 || st.LastUnitAttention != uint16(ua[0])<<8|uint16(ua[1]) {
			t.Fatalf("UA %x: stats %+v", ua, st)
		}
	}
}

func TestEnsureRegisteredFallbacksAndConflict(t *testing.T) {
	m := newPRModel()
	m.noRegIgnore = true
	n1, _ := m.openOn(t, "n1", Config{})
	must(t, "first registration", n1.EnsureRegistered(key1))
	must(t, "again, already registered", n1.EnsureRegistered(key1))
	if got := m.ops(); !slices.Equal(got, []string{"REGISTER AND IGNORE", "REGISTER",
		"REGISTER AND IGNORE", "REGISTER", "REGISTER"}) {
		t.Fatalf("commands %q", got)
	}
	if _, keys, _ := m.state(); !slices.Equal(keys, []uint64{key1}) {
		t.Fatalf("keys %x", keys)
	}
	// An SPC-2 reservation by another initiator: every PR OUT conflicts.
	m.spc2Reserved = true
	err := n1.EnsureRegistered(key1)
	if !errors.Is(err, ErrReservationConflict) || !strings.Contains(err.Error(), "SPC-2") {
		t.Fatalf("registration under an SPC-2 reservation: %v", err)
	}
}

// Linux LIO without its PR folder (db_root/pr, /var/target/pr by default)
// registers the key, then answers NOT READY 08/00 (LOGICAL UNIT
// COMMUNICATION FAILURE) because it cannot save the state. The error must
// say what to fix on the array, not leave the operator with a sense code.
func TestRegisterOnLIOWithoutStateFolderSaysWhatToFix(t *testing.T) {
	m := newPRModel()
	m.noStateDir = true
	n1, _ := m.openOn(t, "n1", Config{})
	err := n1.EnsureRegistered(key1)
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "/var/target/pr") {
		t.Fatalf("registration on a LIO array without its PR folder: %v", err)
	}
	var se *SenseError
	if !errors.As(err, &se) || se.ASC != 0x08 {
		t.Fatalf("the sense data is lost from the error: %v", err)
	}
	m.noStateDir = false
	must(t, "registration once the folder exists", n1.EnsureRegistered(key1))
	if _, keys, _ := m.state(); !slices.Equal(keys, []uint64{key1}) {
		t.Fatalf("keys %x", keys)
	}
}

func TestIsRegisteredPerSession(t *testing.T) {
	m := newPRModel()
	n1, _ := m.openOn(t, "n1", Config{})
	n1hb, _ := m.openOn(t, "n1", Config{Purpose: PurposeDiskHeartbeat})
	must(t, "register", n1.EnsureRegistered(key1))
	if ok, err := n1.IsRegistered(key1); !ok || err != nil {
		t.Fatalf("registered session: %v %v", ok, err)
	}
	// The same node's other session is another I_T nexus: not registered.
	if ok, err := n1hb.IsRegistered(key1); ok || err != nil {
		t.Fatalf("unregistered session: %v %v", ok, err)
	}
	if _, err := n1.IsRegistered(0); err == nil {
		t.Fatal("key 0 accepted")
	}
}

// dropConnection cuts the Disk's connection at the target side and waits
// until the Disk has logged in again.
func dropConnection(t *testing.T, d *Disk, f *fakeTarget) {
	t.Helper()
	before := d.Stats().Reconnects
	f.mu.Lock()
	c := f.conn
	f.mu.Unlock()
	c.Close()
	waitFor(t, func() bool { return d.Stats().Reconnects > before && d.Connected() })
}

// keepSetup: n1 registered (volume and disk-heartbeat sessions, both kept
// registered under one group), n2 registered and holding WE-RO, so n1's
// writes need its registration.
func keepSetup(t *testing.T, m *prModel) (n1, n1hb, n2 *Disk, f1 *fakeTarget, g *RegistrationGroup) {
	t.Helper()
	cfg := Config{ReconnectInterval: 10 * time.Millisecond}
	n1, f1 = m.openOn(t, "n1", cfg)
	n1hb, _ = m.openOn(t, "n1", Config{Purpose: PurposeDiskHeartbeat, ReconnectInterval: 10 * time.Millisecond})
	n2, _ = m.openOn(t, "n2", cfg)
	g = &RegistrationGroup{}
	for _, d := range []*Disk{n1, n1hb} {
		must(t, "n1 register", d.EnsureRegistered(key1))
		d.KeepRegistered(key1, g)
	}
	must(t, "n2 register", n2.EnsureRegistered(key2))
	must(t, "n2 reserve", n2.Reserve(key2, werO))
	must(t, "n1 write as registrant", n1.WriteAt(make([]byte, 512), 0, false))
	return
}

// tgtd forgets a session's registration when the session ends (SPC-4 keeps
// it with the I_T nexus). A reconnect after a network blip must not look
// like being fenced: the Disk registers the new session again before it
// carries I/O, and the node's writes go on.
func TestKeepRegisteredAcrossReconnect(t *testing.T) {
	for _, sessionBound := range []bool{true, false} {
		m := newPRModel()
		m.sessionBound = sessionBound
		n1, _, _, f1, _ := keepSetup(t, m)
		dropConnection(t, n1, f1)
		if err := n1.WriteAt(make([]byte, 512), 0, false); err != nil {
			t.Fatalf("session-bound %v: write after a reconnect: %v", sessionBound, err)
		}
		want := uint64(0)
		if sessionBound {
			want = 1 // the target forgot it; restored
		}
		if st := n1.Stats(); st.Reregistrations != want || st.RegistrationsLost != 0 {
			t.Fatalf("session-bound %v: stats %+v, want %d re-registrations", sessionBound, st, want)
		}
	}
}

// A node preempted while its session was away stays fenced: the
// reconnect finds its key gone and does not register it back.
func TestKeepRegisteredNeverUndoesAPreempt(t *testing.T) {
	m := newPRModel()
	m.sessionBound = true
	n1, n1hb, n2, f1, _ := keepSetup(t, m)
	// n1's session drops; n2 preempts n1 before the new session's first
	// reservation command.
	var fired atomic.Bool
	m.before = func(m *prModel, nexus string, sa byte) {
		if fired.CompareAndSwap(false, true) {
			if _, err := n2.PreemptAbort(key2, key1, werO); err != nil {
				t.Errorf("peer's preempt: %v", err)
			}
		}
	}
	dropConnection(t, n1, f1)
	if st := n1.Stats(); st.Reregistrations != 0 || st.RegistrationsLost != 1 {
		t.Fatalf("stats %+v, want the registration found lost", st)
	}
	for _, d := range []*Disk{n1, n1hb} {
		if err := d.WriteAt(make([]byte, 512), 0, false); !errors.Is(err, ErrReservationConflict) {
			t.Fatalf("%s write after being preempted: %v, want ErrReservationConflict", d.cfg.Purpose, err)
		}
	}
	if _, keys, _ := m.state(); slices.Contains(keys, key1) {
		t.Fatalf("fenced node's key registered again: %x", keys)
	}
}

// The peer's PREEMPT slips in between our READ KEYS (our key still there)
// and our REGISTER: the PR generation moves by two, so the registration is
// undone, and the second look finds the key gone.
func TestReregisterLosesTheRaceWithAPreempt(t *testing.T) {
	m := newPRModel()
	m.sessionBound = true
	n1, n1hb, n2, f1, g := keepSetup(t, m)
	n1.KeepRegistered(0, nil) // drive the steps by hand
	dropConnection(t, n1, f1)
	var fired atomic.Bool
	m.before = func(m *prModel, nexus string, sa byte) {
		if sa == prOutRegisterAndIgnore && fired.CompareAndSwap(false, true) {
			if _, err := n2.PreemptAbort(key2, key1, werO); err != nil {
				t.Errorf("peer's preempt: %v", err)
			}
		}
	}
	g.Lock()
	ok, err := n1.Reregister(key1)
	g.Unlock()
	if ok || err != nil {
		t.Fatalf("re-registration racing a preempt: %v %v, want false", ok, err)
	}
	if _, keys, _ := m.state(); !slices.Equal(keys, []uint64{key2}) {
		t.Fatalf("keys %x: the fenced node's registration survived", keys)
	}
	for _, d := range []*Disk{n1, n1hb} {
		if err := d.WriteAt(make([]byte, 512), 0, false); !errors.Is(err, ErrReservationConflict) {
			t.Fatalf("write after losing the race: %v", err)
		}
	}
}

// Another initiator changing registrations on every attempt: the
// re-registration is never proven, gives up with ErrRegistrationUncertain
// and leaves nothing registered for the session.
func TestReregisterGivesUpWhenNeverProven(t *testing.T) {
	m := newPRModel()
	m.sessionBound = true
	n1, _, _, f1, _ := keepSetup(t, m)
	n1.KeepRegistered(0, nil)
	dropConnection(t, n1, f1)
	m.before = func(m *prModel, nexus string, sa byte) {
		if sa == prOutRegisterAndIgnore {
			m.mu.Lock()
			m.gen++ // a third initiator's REGISTER
			m.mu.Unlock()
		}
	}
	ok, err := n1.Reregister(key1)
	if ok || !errors.Is(err, ErrRegistrationUncertain) {
		t.Fatalf("never proven: %v %v", ok, err)
	}
	if ok, err := n1.IsRegistered(key1); ok || err != nil {
		t.Fatalf("session left registered: %v %v", ok, err)
	}
}
