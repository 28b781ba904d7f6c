package fence_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// mirrord opens its sessions in the background, so the fence agent exists
// even when an array is down at start: that array is unreachable (not
// fenced, not fatal) until the sessions' first login; then, with the same
// session objects, Register and Takeover work there, and the disk
// heartbeat's session registers at its first login.
func TestFenceWithAnArrayDownAtStart(t *testing.T) {
	l := startArrays(t)
	a, b := l.arrays[0], l.arrays[1]
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	l.addNodes(true)
	n1, n2 := l.nodes["node1"], l.nodes["node2"]
	for _, n := range []*labNode{n1, n2} {
		waitFor(t, n.name+" logs in to array A", func() bool { return n.vol[a.Name].Ready() && n.hb[a.Name].Ready() })
		d := n.vol[b.Name]
		if d.Ready() || d.Connected() || d.Size() != 0 {
			t.Fatalf("%s's session to the dead array B: ready %v connected %v size %d", n, d.Ready(), d.Connected(), d.Size())
		}
		start := time.Now()
		err := d.WriteAt(make([]byte, 4096), 0, false)
		if !errors.Is(err, iscsi.ErrNotConnected) || !errors.Is(err, iscsi.ErrDisconnected) {
			t.Fatalf("write before the first login: %v, want ErrNotConnected (and ErrDisconnected)", err)
		}
		if _, _, err := d.ReadKeys(); !errors.Is(err, iscsi.ErrNotConnected) {
			t.Fatalf("READ KEYS before the first login: %v", err)
		}
		if el := time.Since(start); el > 500*time.Millisecond {
			t.Fatalf("commands before the first login took %v: they must fail fast", el)
		}
	}

	r := mustOK(t, "node1 register with B down")(n1.fence.Register(ctx(t)))
	if !slices.Equal(r.Fenced(), []string{a.Name}) || !slices.Equal(r.Unreachable(), []string{b.Name}) {
		t.Fatalf("register: fenced %v unreachable %v, want A done and B unreachable", r.Fenced(), r.Unreachable())
	}
	mustOK(t, "node2 register with B down")(n2.fence.Register(ctx(t)))
	mustOK(t, "node1 acquire with B down")(n1.fence.Acquire(ctx(t)))
	mustOK(t, "node1 check with B down")(n1.fence.Check(ctx(t)))

	// Array B comes up: the same Disks log in and identify the LUN.
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*labNode{n1, n2} {
		for _, d := range []*iscsi.Disk{n.vol[b.Name], n.hb[b.Name]} {
			if err := d.WaitReady(ctx(t)); err != nil {
				t.Fatal(err)
			}
			if d.Size() != lunSize || d.BlockSize() == 0 {
				t.Fatalf("%s after the first login: size %d block size %d", d.Name(), d.Size(), d.BlockSize())
			}
		}
	}
	// node1 dies; node2 takes over on both arrays, B included.
	r = mustOK(t, "node2 takeover, B up")(n2.fence.Takeover(ctx(t), n1.key))
	if !slices.Equal(r.Fenced(), []string{a.Name, b.Name}) {
		t.Fatalf("takeover fenced %v, want both arrays", r.Fenced())
	}
	for _, arr := range []string{a.Name, b.Name} {
		l.mustWrite(n2, "vol", arr, 0x71)
		l.mustWrite(n2, "hb", arr, 0x72)
		l.mustBeFencedOff(n1, "vol", arr, 0x73)
		l.mustBeFencedOff(n1, "hb", arr, 0x74)
	}
}

// A disk-heartbeat session that logs in for the first time after the
// node registered (and reserved) registers itself at that login, before
// its first write; the array counts as reached, not unreachable, while
// only the volume's session is up.
func TestDiskHeartbeatRegistersAtItsFirstLogin(t *testing.T) {
	a := iscsitarget.StartArray(t, t.TempDir(), "array-a", lunSize)
	cfg := iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:node1", Timeout: time.Second, ReconnectInterval: 50 * time.Millisecond}
	vol, err := iscsi.OpenLeg(ctx(t), a.URL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vol.Close() })
	hbCfg := cfg
	hbCfg.Purpose = iscsi.PurposeDiskHeartbeat
	gate := make(chan struct{})
	var dialer net.Dialer
	hbCfg.Dial = func(c context.Context, network, addr string) (net.Conn, error) {
		select {
		case <-gate:
			return dialer.DialContext(c, network, addr)
		case <-c.Done():
			return nil, c.Err()
		}
	}
	hb, err := iscsi.OpenLegInBackground(a.URL, hbCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hb.Close() })
	f, err := fence.New(fence.Config{Key: 0x1111, Peers: []uint64{0x2222},
		Arrays: []fence.Array{{Name: a.Name, Volume: vol, DiskHeartbeat: hb}}})
	if err != nil {
		t.Fatal(err)
	}
	r := mustOK(t, "register, disk heartbeat not logged in yet")(f.Register(ctx(t)))
	if len(r.Unreachable()) != 0 {
		t.Fatalf("the array counts as unreachable while only its disk heartbeat session is down:\n%s", r)
	}
	mustOK(t, "acquire")(f.Acquire(ctx(t)))
	if err := hb.WriteAt(make([]byte, 4096), 4096, false); !errors.Is(err, iscsi.ErrNotConnected) {
		t.Fatalf("disk heartbeat write before its first login: %v", err)
	}
	close(gate)
	if err := hb.WaitReady(ctx(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the disk heartbeat connects", hb.Connected)
	if err := hb.WriteAt(make([]byte, 4096), 4096, true); err != nil {
		t.Fatalf("the disk heartbeat's first write under our WE-RO reservation: %v (not registered at its first login?)", err)
	}
	if st := hb.Stats(); st.Reregistrations != 1 {
		t.Fatalf("disk heartbeat stats %+v, want its registration made at the first login", st)
	}
	mustOK(t, "check")(f.Check(ctx(t)))
}
