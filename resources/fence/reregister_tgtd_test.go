package fence_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/resources/fence"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// interposer passes a session's bytes through and lets a test act when a
// given command leaves (before it reaches the array) and hold what the
// array answers.
type interposer struct {
	net.Conn
	onCommand func(cdb []byte) // called before a SCSI Command PDU is sent
	afterSend func(cdb []byte) // called after it was sent
	mu        sync.Mutex
	hold      chan struct{} // reads wait while set
}

func (c *interposer) cdb(p []byte) []byte {
	if len(p) >= 48 && p[0]&0x3f == 0x01 { // SCSI Command BHS
		return p[32:48]
	}
	return nil
}

func (c *interposer) Write(p []byte) (int, error) {
	cdb := c.cdb(p)
	if cdb != nil && c.onCommand != nil {
		c.onCommand(cdb)
	}
	n, err := c.Conn.Write(p)
	if cdb != nil && c.afterSend != nil {
		c.afterSend(cdb)
	}
	return n, err
}

func (c *interposer) Read(p []byte) (int, error) {
	c.mu.Lock()
	h := c.hold
	c.mu.Unlock()
	if h != nil {
		<-h
	}
	return c.Conn.Read(p)
}

func (c *interposer) setHold(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case on && c.hold == nil:
		c.hold = make(chan struct{})
	case !on && c.hold != nil:
		close(c.hold)
		c.hold = nil
	}
}

// The old owner's Check restores a registration its disk-heartbeat session
// lost (as its own stale-reservation release leaves it) while that session
// carries writes. Its guard reads the keys, then registers: a takeover that
// completes between the two leaves the old owner registered until its undo,
// and a disk-heartbeat write sent meanwhile lands after the new owner's
// Takeover returned. A session carrying I/O must never be registered by an
// unproven step.
func TestNoWriteLandsWhileAnUnprovenRegistrationIsUndone(t *testing.T) {
	a := iscsitarget.StartArray(t, t.TempDir(), "array-a", lunSize)
	open := func(node string, p iscsi.Purpose, dial func(context.Context, string, string) (net.Conn, error)) *iscsi.Disk {
		d, err := iscsi.OpenLeg(ctx(t), a.URL, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:" + node, Purpose: p,
			Timeout: 2 * time.Second, ReconnectInterval: 50 * time.Millisecond, Dial: dial})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	const key1, key2 = 0x1111, 0x2222
	const hbOff = 4096
	slot := bytes.Repeat([]byte{0x5a}, 4096)
	var (
		armed        atomic.Bool
		once         sync.Once
		takeoverErr  error
		takeoverDone = make(chan struct{})
		writeDone    = make(chan error, 1)
		f2           *fence.Fence
		hb1          *iscsi.Disk
		dialer       net.Dialer
	)
	// Every connection of node1's disk-heartbeat session is interposed:
	// the first REGISTER AND IGNORE EXISTING KEY it sends once armed (the
	// restore, whichever session sends it) is where node1 "freezes".
	dial := func(c context.Context, network, addr string) (net.Conn, error) {
		nc, err := dialer.DialContext(c, network, addr)
		if err != nil {
			return nil, err
		}
		conn := &interposer{Conn: nc}
		conn.onCommand = func(cdb []byte) {
			if !armed.Load() || cdb[0] != 0x5f || cdb[1]&0x1f != 6 { // PERSISTENT RESERVE OUT, REGISTER AND IGNORE EXISTING KEY
				return
			}
			once.Do(func() {
				// node1 froze between its guard's READ KEYS and this
				// REGISTER; node2 declares it dead and takes over, to
				// completion.
				_, takeoverErr = f2.Takeover(ctx(t), key1)
				close(takeoverDone)
				conn.setHold(true) // the array's answer to REGISTER waits for node1's next write
				go func() {
					err := hb1.WriteAt(slot, hbOff, true)
					conn.setHold(false)
					writeDone <- err
				}()
			})
		}
		conn.afterSend = func(cdb []byte) {
			if cdb[0] == 0x8a { // WRITE(16)
				conn.setHold(false)
			}
		}
		return conn, nil
	}
	vol1 := open("node1", iscsi.PurposeVolume, nil)
	hb1 = open("node1", iscsi.PurposeDiskHeartbeat, dial)
	vol2, hb2 := open("node2", iscsi.PurposeVolume, nil), open("node2", iscsi.PurposeDiskHeartbeat, nil)
	f1, err := fence.New(fence.Config{Key: key1, Peers: []uint64{key2}, Arrays: []fence.Array{{Name: a.Name, Volume: vol1, DiskHeartbeat: hb1}}})
	if err != nil {
		t.Fatal(err)
	}
	f2, err = fence.New(fence.Config{Key: key2, Peers: []uint64{key1}, Arrays: []fence.Array{{Name: a.Name, Volume: vol2, DiskHeartbeat: hb2}}})
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, "node1 register")(f1.Register(ctx(t)))
	mustOK(t, "node2 register")(f2.Register(ctx(t)))
	mustOK(t, "node1 acquire")(f1.Acquire(ctx(t)))
	// node1's disk-heartbeat session loses its registration while node1's
	// key stays registered through its volume session.
	if err := hb1.Register(key1, 0); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	_, checkErr := f1.Check(ctx(t))
	select {
	case <-takeoverDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("node1 never restored its disk heartbeat's registration (check: %v)", checkErr)
	}
	if takeoverErr != nil {
		t.Fatalf("node2's takeover: %v", takeoverErr)
	}
	werr := <-writeDone
	landed := func() bool {
		b, err := os.ReadFile(a.Img)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Equal(b[hbOff:hbOff+4096], slot)
	}
	if landed() {
		t.Fatalf("node1's disk-heartbeat write landed after node2's Takeover returned (write err %v, node1 check %v)", werr, checkErr)
	}
	t.Logf("node1's write during the restore: %v; node1's check: %v", werr, checkErr)
	// Once the restore settled, node1's disk heartbeat stays fenced off.
	waitFor(t, "node1's disk heartbeat settles", func() bool { return hb1.Connected() || hb1.Stats().RegistrationsLost > 0 })
	time.Sleep(300 * time.Millisecond)
	for range 3 {
		if err := hb1.WriteAt(slot, hbOff, true); err == nil || landed() {
			t.Fatalf("node1's disk-heartbeat write after the takeover: %v, landed %v", err, landed())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := f1.Check(ctx(t)); !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("node1's check after the takeover: %v, want ErrFenced", err)
	}
}
