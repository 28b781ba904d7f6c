package mirror

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

// The leg lifecycle as scenario scripts (testdata/lifecycle/*.txt), run
// on the pure machine with a fake clock. A line is a command; "expect
// TEXT" checks that the previous command's output contains TEXT. Every
// decision is the real machine's; the script plays the driver's part
// (what a leg presents when it is added, how many calls are still out).
//
//	new                       a 16-chunk volume, both legs in sync
//	write C...                write chunks C (bits durable, writes ended)
//	clear                     clear every idle bit (both legs flushed)
//	fail S io|op|conflict     leg S fails (I/O error, operator, reservation conflict)
//	snap S NAME               remember what leg S presents now, as NAME
//	inflight S N              N leg calls into slot S are still running
//	add S LEG [force]         the operator adds LEG to slot S; LEG is same
//	                          (what the leg presents now), a NAME from snap,
//	                          blank, fs, foreign, corrupt, unreadable, clone
//	                          (the running volume's newest generation), newer,
//	                          diverged, otherslot
//	autoadd S LEG             the same, by AutoReAdd
//	copy C...                 the resync copies chunks C (one batch, epochs of now)
//	lock C / unlock C         a copier takes or releases chunk C
//	commit                    the batch is flushed and recorded (or not)
//	resync                    copy every chunk still needed, commit, finish
//	state                     both slots' states
//	status S                  what slot S lacks, in chunks
//	due S / tick D            AutoReAdd's backoff on the fake clock
//	admit OFF N / hold OFF N / release OFF N / end OFF N   write admission
func TestLifecycleScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/lifecycle/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s := &legScenario{t: t, now: t0, snaps: map[string]*superblock{}}
			for n, line := range strings.Split(string(data), "\n") {
				if i := strings.Index(line, "#"); i >= 0 {
					line = line[:i]
				}
				fields := strings.Fields(line)
				if len(fields) == 0 {
					continue
				}
				s.where = fmt.Sprintf("%s:%d", filepath.Base(f), n+1)
				if fields[0] == "expect" {
					want := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "expect"))
					if !strings.Contains(s.out, want) {
						t.Fatalf("%s: expect %q, got %q", s.where, want, s.out)
					}
					continue
				}
				s.out = s.do(fields)
				t.Logf("%s: %s -> %s", s.where, strings.Join(fields, " "), s.out)
			}
		})
	}
}

type legScenario struct {
	t        *testing.T
	where    string
	m        *machine
	now      time.Time
	out      string
	inflight [2]int64
	snaps    map[string]*superblock
	batch    []int64
	stamps   []uint64
	ep       [2]uint64
}

func (s *legScenario) num(f string) int64 {
	n, err := strconv.ParseInt(f, 0, 64)
	if err != nil {
		s.t.Fatalf("%s: %q is not a number", s.where, f)
	}
	return n
}

func (s *legScenario) slot(f string) int {
	n := s.num(f)
	if n != 0 && n != 1 {
		s.t.Fatalf("%s: slot %q", s.where, f)
	}
	return int(n)
}

func (s *legScenario) do(f []string) string {
	m := s.m
	if f[0] != "new" && m == nil {
		s.t.Fatalf("%s: start with new", s.where)
	}
	switch f[0] {
	case "new":
		id := uint64(0x100)
		s.m = newMachine(machineConfig{
			chunk: mChunk, dataSize: 16 * mChunk, volUUID: [16]byte{0xAA}, delay: time.Second,
			newGen: func() uint64 { id++; return id }, legs: [2]legState{legInSync, legInSync},
			legUUIDs: [2][16]byte{{1}, {2}}, events: 1, gens: []generation{{0x100, 1}}, bitmapGen: 0x100, lastWriter: "n",
		})
		durable(s.m)
		return "ok"
	case "write":
		for _, c := range f[1:] {
			off := s.num(c) * mChunk
			if _, a := m.beginWrite(off, 4096, s.now); a != admitted {
				return fmt.Sprintf("write %s not admitted", c)
			}
			m.endWrite(off, 4096, s.now)
		}
		durable(m)
		return "ok"
	case "clear":
		cands, ep := m.clearCandidates(s.now, true)
		n := m.clearBits(cands, ep)
		durable(m)
		return fmt.Sprintf("cleared %d", n)
	case "fail":
		var cause error
		switch f[2] {
		case "io":
			cause = errMedium
		case "conflict":
			cause = fmt.Errorf("WRITE(16): %w", iscsi.ErrReservationConflict)
		case "op":
			_, _, err := m.failByOperator(s.slot(f[1]), s.now)
			durable(m)
			return result(err, "failed, parked")
		}
		_, err := m.fail(s.slot(f[1]), cause)
		durable(m)
		if m.fenced != nil {
			return "fenced: " + m.dead.Error()
		}
		return result(err, "failed")
	case "snap":
		s.snaps[f[2]] = s.presents(s.slot(f[1]))
		return "ok"
	case "inflight":
		s.inflight[s.slot(f[1])] = s.num(f[2])
		return "ok"
	case "add", "autoadd":
		return s.add(s.slot(f[1]), f[2], slices.Contains(f, "force"), f[0] == "add")
	case "copy":
		s.ep = m.epochs()
		if len(s.batch) == 0 {
			m.startResync()
		}
		for _, c := range f[1:] {
			m.lockChunk(s.num(c))
			s.batch = append(s.batch, s.num(c))
			s.stamps = append(s.stamps, m.unlockChunk(s.num(c)))
		}
		return "ok"
	case "lock":
		if m.lockChunk(s.num(f[1])) {
			return "locked, ready to copy"
		}
		return "locked, waits for writes in flight"
	case "unlock":
		m.unlockChunk(s.num(f[1]))
		return "ok"
	case "commit":
		ok := m.copied(s.batch, s.stamps, 0, s.ep)
		s.batch, s.stamps = nil, nil
		durable(m)
		if ok {
			return "recorded"
		}
		return "not recorded"
	case "resync":
		if _, dst := m.startResync(); dst < 0 {
			return "nothing to copy"
		}
		ep := m.epochs()
		var batch []int64
		var stamps []uint64
		for c := m.nextNeed(0); c >= 0; c = m.need.next(c + 1) {
			m.lockChunk(c)
			batch, stamps = append(batch, c), append(stamps, m.unlockChunk(c))
		}
		m.copied(batch, stamps, 0, ep)
		seq := m.resyncFinished()
		durable(m)
		if seq == 0 {
			return "not finished"
		}
		return fmt.Sprintf("in sync after %d chunks", len(batch))
	case "state":
		return fmt.Sprintf("0:%s 1:%s", m.slots[0].state, m.slots[1].state)
	case "status":
		return fmt.Sprintf("%d chunks", m.outOfSyncBytes(s.slot(f[1]), 16*mChunk)/mChunk)
	case "due":
		return fmt.Sprint(m.readdDue(s.slot(f[1]), s.now, time.Second))
	case "tick":
		d, err := time.ParseDuration(f[1])
		if err != nil {
			s.t.Fatalf("%s: %v", s.where, err)
		}
		s.now = s.now.Add(d)
		return "ok"
	case "admit":
		_, a := m.beginWrite(s.num(f[1]), s.num(f[2]), s.now)
		return [...]string{"admitted", "waits its turn", "waits for an abandoned write"}[a]
	case "hold":
		m.holdWrite(s.num(f[1]), s.num(f[2]))
		return "ok"
	case "release":
		m.releaseHeld(s.num(f[1]), s.num(f[2]), s.now)
		return "ok"
	case "end":
		m.endWrite(s.num(f[1]), s.num(f[2]), s.now)
		return "ok"
	}
	s.t.Fatalf("%s: unknown command %q", s.where, f[0])
	return ""
}

func result(err error, ok string) string {
	if err != nil {
		return "refused: " + err.Error()
	}
	return ok
}

// presents is the superblock leg slot i holds now: the last one written
// to it (its own record if the operator failed it).
func (s *legScenario) presents(i int) *superblock {
	last := s.m.slots[i].lastSB
	if last == nil {
		s.t.Fatalf("%s: slot %d was never written", s.where, i)
	}
	sb := *last
	sb.VolumeUUID, sb.Slot, sb.LegUUID = s.m.volUUID, i, s.m.slots[i].uuid
	sb.ChunkSize, sb.DataSize = s.m.chunk, s.m.dataSize
	if s.m.slots[i].parked {
		sb.LegStates[i] = legFailed
	}
	return &sb
}

func (s *legScenario) add(i int, leg string, force, explicit bool) string {
	m := s.m
	if err := m.beginAdd(i, s.inflight[i], explicit); err != nil {
		return "refused: " + err.Error()
	}
	var sb *superblock
	var readErr error
	sig := ""
	cur := func() *superblock {
		return &superblock{VolumeUUID: m.volUUID, Slot: i, LegUUID: [16]byte{0xEE}, ChunkSize: m.chunk, DataSize: m.dataSize,
			Gens: slices.Clone(m.gens), LegStates: [2]legState{legInSync, legInSync}}
	}
	switch leg {
	case "same":
		sb = s.presents(i)
	case "blank":
		readErr = ErrNoMetadata
	case "fs":
		readErr, sig = ErrNoMetadata, "an ext2/ext3/ext4 file system"
	case "corrupt":
		readErr = fmt.Errorf("copy A: checksum: %w", ErrCorrupt)
	case "unreadable":
		readErr = errMedium
	case "foreign":
		sb = s.presents(i)
		sb.VolumeUUID = [16]byte{0xBB}
	case "clone":
		sb = cur()
	case "newer":
		sb = cur()
		sb.Gens = append(sb.Gens, generation{ID: 0xFEED})
	case "diverged":
		sb = s.presents(i)
		sb.Gens = append(slices.Clone(sb.Gens), generation{ID: 0xD1FF})
	case "otherslot":
		sb = s.presents(i)
		sb.Slot, sb.LegUUID = 1-i, m.slots[1-i].uuid
	default:
		snap, ok := s.snaps[leg]
		if !ok {
			s.t.Fatalf("%s: unknown leg %q", s.where, leg)
		}
		sb = snap
	}
	p, err := m.planAdd(i, "leg", sb, readErr, sig, force)
	if err != nil {
		m.abortAdd(i)
		var split *SplitBrainError
		if errors.As(err, &split) {
			return "refused: split brain: " + err.Error()
		}
		return "refused: " + err.Error()
	}
	if p.uuid == ([16]byte{}) {
		p.uuid = [16]byte{0xCC, byte(m.slots[i].epoch)}
	}
	if err := m.attach(i, p, nil, s.inflight[i], s.now); err != nil {
		m.abortAdd(i)
		return "refused: " + err.Error()
	}
	durable(m)
	kind := "bitmap"
	if p.full {
		kind = "full"
	}
	return fmt.Sprintf("copy %s %d chunks (%s)", kind, m.needCount, p.why)
}
