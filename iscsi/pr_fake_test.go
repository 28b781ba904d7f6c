package iscsi

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// prModel is an SPC-4 persistent reservation device server for one LUN,
// shared by the fake targets of several Disks (one per session), so unit
// tests can run two "nodes" against one LUN and make it answer as a real
// array would, or as one that deviates. It exists because tgtd cannot be
// told to implement PREEMPT AND ABORT (LIO does), to raise a UNIT
// ATTENTION or a RESERVATION CONFLICT on demand, or to slip a peer's
// PREEMPT between two commands of ours.
type prModel struct {
	mu     sync.Mutex
	gen    uint32
	regs   []prReg // in registration order
	holder string  // nexus holding the reservation ("" none)
	typ    ReservationType
	ua     map[string][]byte // pending UNIT ATTENTION (ASC, ASCQ) per nexus
	held   []heldCmd         // WRITEs held unanswered (hold)
	log    []string          // PR OUT service actions, as named by prOutName

	// Behaviour switches.
	sessionBound  bool // tgtd: a registration belongs to the session, not the ISID
	noPreemptAbrt bool // tgtd 1.0.85: PREEMPT AND ABORT is ILLEGAL REQUEST
	noRegIgnore   bool // REGISTER AND IGNORE EXISTING KEY is ILLEGAL REQUEST
	spc2Reserved  bool // another initiator holds an SPC-2 RESERVE: PR OUT conflicts
	hold          bool // hold WRITEs unanswered until a PREEMPT AND ABORT ends them
	// noStateDir: Linux LIO whose PR folder (db_root/pr) is missing: a
	// REGISTER takes effect, then fails with NOT READY 08/00 when the
	// target cannot write its APTPL state file.
	noStateDir bool
	// before runs ahead of each PR OUT (under no lock): a test injects
	// another initiator's change between two commands of ours.
	before func(m *prModel, nexus string, sa byte)
}

type prReg struct {
	nexus string
	key   uint64
}

type heldCmd struct {
	f     *fakeTarget
	p     *PDU
	nexus string
}

func newPRModel() *prModel { return &prModel{ua: map[string][]byte{}} }

// nexus is the I_T nexus of f's current login.
func (m *prModel) nexus(f *fakeTarget) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.sessionBound {
		return fmt.Sprintf("%x#%d", f.isid, f.logins)
	}
	return fmt.Sprintf("%x", f.isid)
}

func (m *prModel) regOf(nexus string) (int, bool) {
	for i, r := range m.regs {
		if r.nexus == nexus {
			return i, true
		}
	}
	return 0, false
}

func (m *prModel) keys() []uint64 {
	var k []uint64
	for _, r := range m.regs {
		k = append(k, r.key)
	}
	return k
}

// preemptKey removes every registration of victim but the issuer's,
// queueing UNIT ATTENTION 2A/05 for each.
func (m *prModel) preemptKey(issuer string, victim uint64) {
	m.regs = slices.DeleteFunc(m.regs, func(r prReg) bool {
		if r.key == victim && r.nexus != issuer {
			m.ua[r.nexus] = []byte{0x2a, 0x05}
			if m.holder == r.nexus {
				m.holder = ""
			}
			return true
		}
		return false
	})
}

var prOutName = map[byte]string{prOutRegister: "REGISTER", prOutReserve: "RESERVE", prOutRelease: "RELEASE",
	prOutClear: "CLEAR", prOutPreempt: "PREEMPT", prOutPreemptAndAbort: "PREEMPT AND ABORT", prOutRegisterAndIgnore: "REGISTER AND IGNORE"}

// handler answers the commands identify does not.
func (m *prModel) handler() func(f *fakeTarget, p *PDU) []*PDU {
	return onCmd(func(f *fakeTarget, p *PDU) []*PDU {
		cdb := p.BHS[32:48]
		nexus := m.nexus(f)
		if cdb[0] == scsiPROut && m.before != nil {
			m.before(m, nexus, cdb[1]&0x1f)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if ua := m.ua[nexus]; ua != nil {
			delete(m.ua, nexus)
			return []*PDU{f.response(p, statusCheckCondition, fixedSense(SenseUnitAttention, ua[0], ua[1]))}
		}
		switch cdb[0] {
		case scsiPRIn:
			return []*PDU{m.prIn(f, p)}
		case scsiPROut:
			return []*PDU{m.prOut(f, p, nexus)}
		case scsiWrite16:
			if _, reg := m.regOf(nexus); m.holder != "" && m.holder != nexus && !reg {
				return []*PDU{f.response(p, statusReservationConflict, nil)}
			}
			if m.hold {
				m.held = append(m.held, heldCmd{f, p, nexus})
				return nil
			}
			return []*PDU{f.response(p, statusGood, nil)}
		case scsiRead16:
			n := binary.BigEndian.Uint32(cdb[10:]) * 512
			return []*PDU{f.dataIn(p, 0, make([]byte, n), 0, true)}
		}
		return []*PDU{f.response(p, statusCheckCondition, fixedSense(SenseIllegalRequest, 0x20, 0))}
	})
}

func (m *prModel) prIn(f *fakeTarget, p *PDU) *PDU {
	cdb := p.BHS[32:48]
	alloc := int(binary.BigEndian.Uint16(cdb[7:]))
	var d []byte
	switch cdb[1] & 0x1f {
	case prInReadKeys:
		d = binary.BigEndian.AppendUint32(nil, m.gen)
		d = binary.BigEndian.AppendUint32(d, uint32(8*len(m.regs)))
		for _, k := range m.keys() {
			d = binary.BigEndian.AppendUint64(d, k)
		}
	case prInReadReservation:
		d = binary.BigEndian.AppendUint32(nil, m.gen)
		if i, ok := m.regOf(m.holder); ok && m.holder != "" {
			d = binary.BigEndian.AppendUint32(d, 16)
			d = binary.BigEndian.AppendUint64(d, m.regs[i].key)
			d = append(d, 0, 0, 0, 0, 0, byte(m.typ), 0, 0)
		} else {
			d = binary.BigEndian.AppendUint32(d, 0)
		}
	case prInReportCapabilities:
		d = []byte{0, 8, 0, 0x80, 0xea, 0x01, 0, 0}
	default:
		return f.response(p, statusCheckCondition, fixedSense(SenseIllegalRequest, 0x24, 0))
	}
	return f.dataIn(p, 0, d[:min(len(d), alloc)], 0, true)
}

func (m *prModel) prOut(f *fakeTarget, p *PDU, nexus string) *PDU {
	cdb := p.BHS[32:48]
	sa, typ := cdb[1]&0x1f, ReservationType(cdb[2]&0x0f)
	m.log = append(m.log, prOutName[sa])
	conflict := func() *PDU { return f.response(p, statusReservationConflict, nil) }
	illegal := func() *PDU {
		return f.response(p, statusCheckCondition, fixedSense(SenseIllegalRequest, 0x24, 0))
	}
	if m.spc2Reserved {
		return conflict()
	}
	if len(p.Data) < 24 {
		return illegal()
	}
	key, saKey := binary.BigEndian.Uint64(p.Data), binary.BigEndian.Uint64(p.Data[8:])
	i, reg := m.regOf(nexus)
	switch sa {
	case prOutRegister, prOutRegisterAndIgnore:
		if sa == prOutRegisterAndIgnore && m.noRegIgnore {
			return illegal()
		}
		ignore := sa == prOutRegisterAndIgnore
		switch {
		case reg && (ignore || m.regs[i].key == key):
			if saKey == 0 {
				m.regs = slices.Delete(m.regs, i, i+1)
				if m.holder == nexus {
					m.holder = ""
				}
			} else {
				m.regs[i].key = saKey
			}
		case !reg && (ignore || key == 0):
			if saKey != 0 {
				m.regs = append(m.regs, prReg{nexus, saKey})
			}
		default:
			return conflict()
		}
		m.gen++
		if m.noStateDir {
			return f.response(p, statusCheckCondition, fixedSense(SenseNotReady, 0x08, 0x00))
		}
	case prOutReserve:
		if !reg || m.regs[i].key != key || m.holder != "" && (m.holder != nexus || m.typ != typ) {
			return conflict()
		}
		m.holder, m.typ = nexus, typ
	case prOutRelease:
		if !reg || m.regs[i].key != key {
			return conflict()
		}
		if m.holder == nexus {
			m.holder = ""
		}
	case prOutPreempt, prOutPreemptAndAbort:
		if sa == prOutPreemptAndAbort && m.noPreemptAbrt {
			return illegal()
		}
		if !reg || m.regs[i].key != key {
			return conflict()
		}
		if !slices.Contains(m.keys(), saKey) {
			return conflict()
		}
		if h, ok := m.regOf(m.holder); ok && m.holder != "" && m.regs[h].key == saKey {
			m.holder, m.typ = nexus, typ
		}
		m.preemptKey(nexus, saKey)
		if sa == prOutPreemptAndAbort {
			// TAS=1: the victims' held commands end with TASK ABORTED.
			m.held = slices.DeleteFunc(m.held, func(h heldCmd) bool {
				if _, still := m.regOf(h.nexus); still {
					return false
				}
				h.f.sendLater(h.f.response(h.p, statusTaskAborted, nil))
				return true
			})
		}
		m.gen++
	default:
		return illegal()
	}
	return f.response(p, statusGood, nil)
}

// openOn opens a Disk for a node (initiator name) on the model.
func (m *prModel) openOn(t *testing.T, node string, cfg Config) (*Disk, *fakeTarget) {
	t.Helper()
	cfg.InitiatorName = "iqn.2026-01.test:" + node
	return startFake(t, cfg, nil, m.handler())
}

// ops returns the PR OUT service actions received so far, and forgets them.
func (m *prModel) ops() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.log
	m.log = nil
	return l
}

func (m *prModel) state() (gen uint32, keys []uint64, holderKey uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i, ok := m.regOf(m.holder); ok && m.holder != "" {
		holderKey = m.regs[i].key
	}
	return m.gen, m.keys(), holderKey
}
