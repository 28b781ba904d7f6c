package lab

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/resources/fence"
)

// fenceNode is a simulated cluster node in the test process: its volume
// and disk-heartbeat sessions to each array, as mirrord opens them, and
// its fence agent over them.
type fenceNode struct {
	name  string
	key   uint64
	vol   map[string]*iscsi.Disk // by array name
	hb    map[string]*iscsi.Disk
	fence *fence.Fence
	slot  int64 // the node's blocks: vol at slot*8192, hb 4096 after
}

// fenceArray is one array as the fence scenario sees it.
type fenceArray struct {
	name string
	url  string
	chap bool // log in with the initiator's CHAP settings (LIO's ACLs)
	// stored reads what the array holds at off, from its disk on the host.
	stored func(off int64) (byte, error)
}

// newFenceNodes opens both nodes' sessions (initiators lioOne and lioTwo)
// to every array and builds their agents.
func newFenceNodes(t *testing.T, l *Lab, arrays []fenceArray) [2]*fenceNode {
	t.Helper()
	var nodes [2]*fenceNode
	for i, ini := range []string{lioOne, lioTwo} {
		n := &fenceNode{name: ini[strings.LastIndex(ini, ":")+1:], key: fence.DeriveKey("lio-lab", ini), slot: int64(i),
			vol: map[string]*iscsi.Disk{}, hb: map[string]*iscsi.Disk{}}
		for _, a := range arrays {
			for p, m := range map[iscsi.Purpose]map[string]*iscsi.Disk{iscsi.PurposeVolume: n.vol, iscsi.PurposeDiskHeartbeat: n.hb} {
				cfg := lioConfig(l, ini, p)
				if !a.chap {
					cfg.User, cfg.Secret, cfg.TargetUser, cfg.TargetSecret = "", "", "", ""
				}
				m[a.name] = openLIO(t, a.url, cfg)
			}
		}
		nodes[i] = n
	}
	for i, n := range nodes {
		var fa []fence.Array
		for _, a := range arrays {
			fa = append(fa, fence.Array{Name: a.name, Volume: n.vol[a.name], DiskHeartbeat: n.hb[a.name]})
		}
		f, err := fence.New(fence.Config{Key: n.key, Peers: []uint64{nodes[1-i].key}, Arrays: fa})
		if err != nil {
			t.Fatal(err)
		}
		n.fence = f
	}
	return nodes
}

func (n *fenceNode) offset(session string) int64 {
	if session == "hb" {
		return n.slot*8192 + 4096
	}
	return n.slot * 8192
}

func (n *fenceNode) write(session, array string, seed byte) error {
	d := n.vol[array]
	if session == "hb" {
		d = n.hb[array]
	}
	return d.WriteAt(bytes.Repeat([]byte{seed}, 4096), n.offset(session), true)
}

func mustStore(t *testing.T, n *fenceNode, session string, a fenceArray, seed byte) {
	t.Helper()
	if err := n.write(session, a.name, seed); err != nil {
		t.Fatalf("%s's %s write on %s: %v", n.name, session, a.name, err)
	}
	if got, err := a.stored(n.offset(session)); err != nil || got != seed {
		t.Fatalf("%s's %s write on %s: the array's disk holds %#x (%v), want %#x", n.name, session, a.name, got, err, seed)
	}
}

func mustBeFenced(t *testing.T, n *fenceNode, session string, a fenceArray, seed byte) {
	t.Helper()
	before, _ := a.stored(n.offset(session))
	if err := n.write(session, a.name, seed); !errors.Is(err, iscsi.ErrReservationConflict) {
		t.Fatalf("%s's %s write on %s after being fenced: %v, want a reservation conflict", n.name, session, a.name, err)
	}
	if got, _ := a.stored(n.offset(session)); got != before {
		t.Fatalf("%s's refused %s write landed on %s", n.name, session, a.name)
	}
}

func fenceOK(t *testing.T, what string) func(fence.Result, error) fence.Result {
	return func(r fence.Result, err error) fence.Result {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, r)
		}
		t.Logf("%s:\n%s", what, strings.TrimSpace(r.String()))
		return r
	}
}

func fctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func lioWait(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, within)
		}
	}
}

// The fence agent of two nodes over two arrays, one LIO and one tgtd, side
// by side: registration (and LIO's missing PR folder), the clean start,
// a takeover (PREEMPT AND ABORT on LIO, the PREEMPT fallback on tgtd),
// RESERVATION CONFLICT for the fenced node, its rejoin; then a hung array
// (LIO: the VM's iSCSI NIC down; tgtd: SIGSTOP): outstanding I/O fails
// within the timeout, every session reconnects, and LIO kept every
// registration (SPC-4: they belong to the I_T nexus) where tgtd lost them
// with the sessions and the initiator restored them; a TPG disabled and
// enabled (registrations kept); and a LIO restart (reservations forgotten,
// restored by Check as on tgtd).
func testLIOFence(t *testing.T, l *Lab, lio *LIO, tgt *Arrays) {
	readFile := func(path string, base int64) func(int64) (byte, error) {
		return func(off int64) (byte, error) {
			f, err := os.Open(path)
			if err != nil {
				return 0, err
			}
			defer f.Close()
			b := make([]byte, 1)
			_, err = f.ReadAt(b, base+off)
			return b[0], err
		}
	}
	lioPath, lioOff := lio.Backing(lioFence)
	A := fenceArray{name: "lio", url: lio.URL(lioFence), chap: true, stored: readFile(lioPath, lioOff)}
	B := fenceArray{name: "tgtd", url: tgt.URL("ft"), stored: readFile(tgt.Backing("ft"), 0)}
	both := []fenceArray{A, B}
	nodes := newFenceNodes(t, l, both)
	n1, n2 := nodes[0], nodes[1]

	// LIO saves PR state in db_root/pr and, without that folder, answers
	// REGISTER with NOT READY 08/00 after applying it. The agent's error
	// names the folder; once it exists, registration works.
	dbroot := strings.TrimSpace(run(t, lio.Node, "cat /sys/kernel/config/target/dbroot"))
	run(t, lio.Node, "rm -rf "+dbroot+"/pr")
	if _, err := n1.fence.Register(fctx(t)); !errors.Is(err, iscsi.ErrNotReady) || !strings.Contains(err.Error(), "/var/target/pr") {
		t.Fatalf("register on LIO without %s/pr: %v; want NOT READY naming the folder", dbroot, err)
	}
	run(t, lio.Node, "mkdir -p "+dbroot+"/pr")

	fenceOK(t, "node one registers")(n1.fence.Register(fctx(t)))
	fenceOK(t, "node two registers")(n2.fence.Register(fctx(t)))
	for _, a := range both {
		if _, keys, err := n1.vol[a.name].ReadKeys(); err != nil || len(keys) != 4 {
			t.Fatalf("%s lists keys %x (%v); want both nodes' keys from four sessions", a.name, keys, err)
		}
	}
	if c, err := n1.vol[A.name].ReportCapabilities(); err != nil || !c.Supports(iscsi.WriteExclusiveRegistrantsOnly) {
		t.Fatalf("LIO's reservation capabilities: %+v %v", c, err)
	}

	// node one starts cleanly; its volume writes, and both disk
	// heartbeats, except where LIO differs: it lets only the holder's own
	// I_T nexus of the holder's initiator name write, so node one's disk
	// heartbeat (its other ISID) gets RESERVATION CONFLICT on LIO though it
	// is registered. A session under another initiator name that node
	// one registers writes (a way around it, resources/fence/doc.go).
	fenceOK(t, "node one acquires")(n1.fence.Acquire(fctx(t)))
	for _, a := range both {
		mustStore(t, n1, "vol", a, 0x11)
		mustStore(t, n2, "hb", a, 0x22)
	}
	mustStore(t, n1, "hb", B, 0x12)
	holderHB := func(n *fenceNode) {
		t.Helper()
		if err := n.write("hb", A.name, 0x12); !errors.Is(err, iscsi.ErrReservationConflict) {
			t.Errorf("%s's disk heartbeat while %s holds WE-RO on LIO: %v; LIO used to refuse it (another ISID of the holder's "+
				"initiator counts as unregistered): if it now writes, update iscsi/doc.go and resources/fence/doc.go", n.name, n.name, err)
		}
	}
	holderHB(n1)
	other := openLIO(t, A.url, lioConfig(l, lioOne+"-heartbeat", iscsi.PurposeDiskHeartbeat))
	if err := other.EnsureRegistered(n1.key); err != nil {
		t.Fatal(err)
	}
	if err := other.WriteAt(bytes.Repeat([]byte{0x12}, 4096), n1.offset("hb"), true); err != nil {
		t.Errorf("node one's disk heartbeat under an initiator name of its own on LIO: %v", err)
	}
	other.Close()

	// node one freezes; node two takes over.
	r := fenceOK(t, "node two takes over")(n2.fence.Takeover(fctx(t), n1.key))
	for _, ar := range r.Arrays {
		wantAbort := ar.Array == A.name // LIO implements PREEMPT AND ABORT; tgtd refuses it
		if !slices.Equal(ar.Preempted, []uint64{n1.key}) || ar.Aborted != wantAbort || !ar.Holder {
			t.Fatalf("takeover on %s: preempted %x, aborted %v, holder %v; want node one's key removed, aborted %v",
				ar.Array, ar.Preempted, ar.Aborted, ar.Holder, wantAbort)
		}
	}
	for _, a := range both {
		mustBeFenced(t, n1, "vol", a, 0x13)
		mustBeFenced(t, n1, "hb", a, 0x14)
		mustStore(t, n2, "vol", a, 0x23)
	}
	mustStore(t, n2, "hb", B, 0x24)
	holderHB(n2)
	if _, err := n1.fence.Check(fctx(t)); !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("node one's check after the takeover: %v, want ErrFenced", err)
	}
	fenceOK(t, "node one rejoins")(n1.fence.Register(fctx(t)))
	for _, a := range both {
		mustStore(t, n1, "hb", a, 0x15)
	}
	// For every initiator but the holder's, LIO decides "registered" per
	// initiator name and LUN, not per I_T nexus: a session of node one
	// that never registered (mirrorctl's) writes under WE-RO on LIO, while
	// tgtd refuses it. (A fenced node has no registration left: refused
	// on both, as above.)
	for _, a := range both {
		cfg := lioConfig(l, lioOne, iscsi.PurposeTool)
		if !a.chap {
			cfg.User, cfg.Secret = "", ""
		}
		d := openLIO(t, a.url, cfg)
		err := d.WriteAt(bytes.Repeat([]byte{0x1f}, 4096), 64<<10, true)
		d.Close()
		if a.chap && err != nil || !a.chap && !errors.Is(err, iscsi.ErrReservationConflict) {
			t.Errorf("an unregistered session of registered node one writes on %s under WE-RO: %v", a.name, err)
		}
	}
	var lioDisks, tgtdDisks []*iscsi.Disk
	for _, n := range nodes {
		lioDisks = append(lioDisks, n.vol[A.name], n.hb[A.name])
		tgtdDisks = append(tgtdDisks, n.vol[B.name], n.hb[B.name])
	}
	connected := func(ds []*iscsi.Disk, want bool) func() bool {
		return func() bool {
			for _, d := range ds {
				if d.Connected() != want {
					return false
				}
			}
			return true
		}
	}

	// Hung arrays: LIO's VM loses its iSCSI NIC (packets vanish, nothing
	// is reset), tgtd is stopped. A write in flight fails within the
	// timeout; every session notices and reconnects once they are back.
	if err := lio.Node.SetLink(NetISCSI, false); err != nil {
		t.Fatal(err)
	}
	if err := tgt.Pause(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err := n2.write("vol", A.name, 0x25)
	failedIn := time.Since(t0)
	if !errors.Is(err, iscsi.ErrTimeout) || failedIn > 3*time.Second+2*time.Second {
		t.Errorf("a write to the hung LIO array: %v after %v; want ErrTimeout within the 3 s timeout", err, failedIn)
	}
	t.Logf("write to the hung LIO array failed after %v: %v", failedIn.Round(time.Millisecond), err)
	lioWait(t, "every session to the hung arrays drops", 10*time.Second, connected(append(lioDisks, tgtdDisks...), false))
	if err := lio.Node.SetLink(NetISCSI, true); err != nil {
		t.Fatal(err)
	}
	if err := tgt.Resume(); err != nil {
		t.Fatal(err)
	}
	lioWait(t, "every session reconnects", 20*time.Second, connected(append(lioDisks, tgtdDisks...), true))
	for _, d := range lioDisks {
		if st := d.Stats(); st.Reconnects == 0 || st.Reregistrations != 0 || st.RegistrationsLost != 0 {
			t.Errorf("%s after the LIO hang: %+v; want a reconnect that found its registration kept (no restore)", d.Name(), st)
		}
	}
	restored := 0
	for _, d := range tgtdDisks {
		restored += int(d.Stats().Reregistrations)
	}
	if restored < len(tgtdDisks) {
		t.Errorf("tgtd sessions restored %d registrations after the hang, want %d (tgtd binds them to the session)", restored, len(tgtdDisks))
	}
	if _, keys, err := n2.vol[A.name].ReadKeys(); err != nil || len(keys) != 4 {
		t.Errorf("LIO after reconnects lists keys %x (%v); want exactly four, no stale ones", keys, err)
	}
	for _, a := range both {
		mustStore(t, n2, "vol", a, 0x26)
		mustStore(t, n1, "hb", a, 0x16)
	}
	fenceOK(t, "node two checks after the hang")(n2.fence.Check(fctx(t)))
	fenceOK(t, "node one checks after the hang")(n1.fence.Check(fctx(t)))

	// The TPG is disabled: LIO closes every session at once and refuses
	// logins; enabled again, the sessions come back, registrations kept.
	if err := lio.SetEnabled(fctx(t), false); err != nil {
		t.Fatal(err)
	}
	lioWait(t, "LIO sessions drop with the TPG disabled", 5*time.Second, connected(lioDisks, false))
	if err := n2.write("vol", A.name, 0x27); !errors.Is(err, iscsi.ErrDisconnected) {
		t.Errorf("a write while the TPG is disabled: %v, want ErrDisconnected at once", err)
	}
	if err := lio.SetEnabled(fctx(t), true); err != nil {
		t.Fatal(err)
	}
	lioWait(t, "LIO sessions return with the TPG enabled", 10*time.Second, connected(lioDisks, true))
	for _, d := range lioDisks {
		if st := d.Stats(); st.Reregistrations != 0 || st.RegistrationsLost != 0 {
			t.Errorf("%s after the TPG came back: %+v; want its registration kept", d.Name(), st)
		}
	}
	mustStore(t, n2, "vol", A, 0x28)
	fenceOK(t, "node two checks after the TPG came back")(n2.fence.Check(fctx(t)))

	// LIO restarts (its configuration rebuilt): without APTPL it forgot
	// every registration and the reservation, as tgtd does. The sessions
	// reconnect to the same LUN; the standby's check registers it again,
	// the active node's check registers and reserves again.
	if err := lio.Restart(fctx(t)); err != nil {
		t.Fatal(err)
	}
	lioWait(t, "LIO sessions return after the restart", 15*time.Second, connected(lioDisks, true))
	if res, err := n2.vol[A.name].ReadReservation(); err != nil || res.Held {
		t.Fatalf("reservation after the LIO restart: %+v %v; want none (LIO keeps it in memory)", res, err)
	}
	fenceOK(t, "node one (standby) checks after the LIO restart")(n1.fence.Check(fctx(t)))
	r = fenceOK(t, "node two (active) checks after the LIO restart")(n2.fence.Check(fctx(t)))
	if !r.Arrays[0].Holder || len(r.Arrays[0].Notes) == 0 {
		t.Errorf("node two's check after the LIO restart: %+v; want it holding the reservation again, with a note", r.Arrays[0])
	}
	for _, a := range both {
		mustStore(t, n2, "vol", a, 0x29)
		mustStore(t, n1, "hb", a, 0x17)
	}
}

// PREEMPT AND ABORT with the victim's writes in flight at the array (held
// by dm-delay): LIO answers the takeover only once they have ended, the
// victim's initiator gets TASK ABORTED, sends them again and ends them with
// RESERVATION CONFLICT, and none of them lands after the takeover. Then the
// TPG is disabled under a write in flight: the write fails within the
// timeout, and the session returns, still registered, once it is enabled.
func testLIOPreemptAbortInFlight(t *testing.T, l *Lab, lio *LIO) {
	slow := fenceArray{name: "slow", url: lio.URL(lioSlow), chap: true}
	nodes := newFenceNodes(t, l, []fenceArray{slow})
	victim, winner := nodes[0], nodes[1]
	fenceOK(t, "victim registers")(victim.fence.Register(fctx(t)))
	fenceOK(t, "winner registers")(winner.fence.Register(fctx(t)))
	fenceOK(t, "victim acquires")(victim.fence.Acquire(fctx(t)))
	blocks := func(d *iscsi.Disk, seed byte) chan error {
		errs := make(chan error, 4)
		for i := range 4 {
			go func() { errs <- d.WriteAt(bytes.Repeat([]byte{seed}, 4096), int64(16+i)*4096, true) }()
		}
		return errs
	}
	waitInFlight := func(what string) {
		t.Helper()
		var n int
		var err error
		lioWait(t, what+" in flight at the array", lioWriteDelay, func() bool {
			n, err = lio.InFlight(fctx(t), lioSlow)
			return err == nil && n > 0
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	errs := blocks(victim.vol["slow"], 0xa1)
	waitInFlight("the victim's writes")
	t0 := time.Now()
	r := fenceOK(t, "winner takes over with the victim's writes in flight")(winner.fence.Takeover(fctx(t), victim.key))
	took := time.Since(t0)
	if ar := r.Arrays[0]; !ar.Aborted || !ar.Holder {
		t.Errorf("takeover: aborted %v, holder %v; want PREEMPT AND ABORT and the reservation", ar.Aborted, ar.Holder)
	}
	for range 4 {
		if err := <-errs; !errors.Is(err, iscsi.ErrReservationConflict) {
			t.Errorf("the victim's write in flight during the takeover: %v, want a reservation conflict", err)
		}
	}
	if st := victim.vol["slow"].Stats(); st.Aborted == 0 {
		t.Errorf("the victim's initiator saw no TASK ABORTED (stats %+v): PREEMPT AND ABORT did not abort its commands", st)
	}
	t.Logf("takeover with the victim's writes in flight took %v (writes held %v at the array)", took.Round(time.Millisecond), lioWriteDelay)
	// Whatever the victim had in flight ended before the takeover did:
	// the winner's writes to the same blocks are the last word.
	werrs := blocks(winner.vol["slow"], 0xb2)
	for range 4 {
		if err := <-werrs; err != nil {
			t.Fatalf("the winner's write: %v", err)
		}
	}
	time.Sleep(lioWriteDelay)
	back := make([]byte, 4*4096)
	if err := winner.vol["slow"].ReadAt(back, 16*4096); err != nil {
		t.Fatal(err)
	}
	if bytes.Count(back, []byte{0xb2}) != len(back) {
		t.Errorf("after the takeover and the winner's writes the blocks hold %x...; a write of the fenced node landed late", back[:16])
	}

	// The TPG is disabled under a write in flight.
	d := winner.vol["slow"]
	failed := make(chan error, 1)
	go func() { failed <- d.WriteAt(bytes.Repeat([]byte{0xb3}, 4096), 32*4096, true) }()
	waitInFlight("the winner's write")
	t0 = time.Now()
	if err := lio.SetEnabled(fctx(t), false); err != nil {
		t.Fatal(err)
	}
	disabledIn := time.Since(t0)
	err := <-failed
	failedIn := time.Since(t0)
	if !errors.Is(err, iscsi.ErrDisconnected) && !errors.Is(err, iscsi.ErrTimeout) || failedIn > lioWriteDelay+3*time.Second {
		t.Errorf("a write in flight when the TPG was disabled: %v after %v", err, failedIn)
	}
	t.Logf("TPG disable took %v; the write in flight failed after %v: %v", disabledIn.Round(time.Millisecond), failedIn.Round(time.Millisecond), err)
	if err := lio.SetEnabled(fctx(t), true); err != nil {
		t.Fatal(err)
	}
	lioWait(t, "the session returns", 10*time.Second, d.Connected)
	if err := d.WriteAt(bytes.Repeat([]byte{0xb4}, 4096), 32*4096, true); err != nil {
		t.Fatalf("write after the TPG came back: %v", err)
	}
	if st := d.Stats(); st.Reregistrations != 0 || st.RegistrationsLost != 0 {
		t.Errorf("after the TPG came back: %+v; want the registration kept", st)
	}
	fenceOK(t, "winner checks after the TPG came back")(winner.fence.Check(fctx(t)))
}
