package nbd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The host has no nbd module, so these tests put a fake kernel behind a
// real genetlink.Conn (genltest): it decodes what Attach sends, takes the
// socket fds as the kernel would, and speaks NBD on them. The real kernel
// path runs in the QEMU lab.

// fakeKernel is the nbd genetlink family as the tests need it.
type fakeKernel struct {
	mu        sync.Mutex // the fake is called from the device's monitor too
	t         *testing.T
	connected map[int]bool
	cmds      []uint8
	attrs     map[uint16]uint64 // integer attributes of the last CONNECT
	ident     string
	socks     []net.Conn // the kernel ends it took
	err       error      // returned by the next CONNECT/RECONFIGURE
	reconf    chan int   // if set, gets the socket count of each RECONFIGURE
}

var fakeFamily = genetlink.Family{ID: 0x42, Version: 1, Name: genlFamily}

func (k *fakeKernel) dial() *genetlink.Conn {
	return genltest.Dial(genltest.ServeFamily(fakeFamily, k.serve))
}

func (k *fakeKernel) serve(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if greq.Header.Command == 0 {
		return nil, io.EOF // a receive with nothing queued
	}
	k.cmds = append(k.cmds, greq.Header.Command)
	ad, err := netlink.NewAttributeDecoder(greq.Data)
	if err != nil {
		return nil, err
	}
	index := -1
	var fds []int
	k.attrs = map[uint16]uint64{}
	for ad.Next() {
		switch ad.Type() {
		case nlAttrIndex:
			index = int(ad.Uint32())
		case nlAttrSizeBytes, nlAttrBlockSizeBytes, nlAttrTimeout, nlAttrServerFlags, nlAttrClientFlags, nlAttrDeadConnTimeout:
			k.attrs[ad.Type()] = ad.Uint64()
		case nlAttrBackendIdentifier:
			k.ident = ad.String()
		case nlAttrSockets:
			ad.Nested(func(s *netlink.AttributeDecoder) error {
				for s.Next() {
					s.Nested(func(item *netlink.AttributeDecoder) error {
						for item.Next() {
							if item.Type() == nlSockFD {
								fds = append(fds, int(item.Uint32()))
							}
						}
						return nil
					})
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		k.t.Fatalf("kernel could not decode command %d: %v", greq.Header.Command, err)
	}
	take := func() {
		for _, fd := range fds {
			nfd, err := unix.Dup(fd)
			if err != nil {
				k.t.Fatalf("fd %d handed to the kernel is not open: %v", fd, err)
			}
			f := os.NewFile(uintptr(nfd), "kernel-end")
			c, err := net.FileConn(f)
			f.Close()
			if err != nil {
				k.t.Fatal(err)
			}
			k.socks = append(k.socks, c)
		}
	}
	reply := func(ae *netlink.AttributeEncoder) []genetlink.Message {
		b, _ := ae.Encode()
		return []genetlink.Message{{Header: genetlink.Header{Command: greq.Header.Command, Version: 1}, Data: b}}
	}
	switch greq.Header.Command {
	case nlCmdConnect:
		if k.err != nil {
			return nil, k.err
		}
		if index < 0 {
			index = 3 // the kernel picks a free device
		}
		k.connected[index] = true
		take()
		ae := netlink.NewAttributeEncoder()
		ae.Uint32(nlAttrIndex, uint32(index))
		return reply(ae), nil
	case nlCmdReconfigure:
		if k.err != nil {
			return nil, k.err
		}
		take()
		if k.reconf != nil {
			select {
			case k.reconf <- len(fds):
			default:
			}
		}
		return nil, io.EOF // no reply message, just the ack
	case nlCmdStatus:
		ae := netlink.NewAttributeEncoder()
		ae.Nested(nlAttrDeviceList, func(l *netlink.AttributeEncoder) error {
			for i := range 4 {
				l.Nested(nlDeviceItem, func(it *netlink.AttributeEncoder) error {
					it.Uint32(nlDeviceIndex, uint32(i))
					c := uint8(0)
					if k.connected[i] {
						c = 1
					}
					it.Uint8(nlDeviceConnected, c)
					return nil
				})
			}
			return nil
		})
		return reply(ae), nil
	case nlCmdDisconnect:
		delete(k.connected, index)
		for _, c := range k.socks {
			// The kernel sends NBD_CMD_DISC, then shuts the socket.
			c.Write(AppendRequest(nil, Request{Type: CmdDisc}))
			c.Close()
		}
		k.socks = nil
		return nil, io.EOF
	}
	return nil, genltest.Error(int(unix.EOPNOTSUPP))
}

func newKernelDevice(t *testing.T, mem *memBackend, path string) (*Device, *Server) {
	srv, err := NewServer(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := deviceIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	return newDevice(srv, idx, AttachOptions{Device: path, Logger: srv.opts.Logger, DeadConnTimeout: 120e9}), srv
}

// kernelIO does one write and one read as the kernel would: simple replies.
func kernelIO(t *testing.T, c net.Conn) {
	t.Helper()
	data := bytes.Repeat([]byte{0x5a}, 4096)
	cl := &client{t: t, c: c, r: bufio.NewReader(c)}
	// Overlapping requests are ordered by the kernel (it waits for the
	// write's reply before reading the same blocks), so do the same.
	c.Write(append(AppendRequest(nil, Request{Type: CmdWrite, Handle: 11, Offset: 8192, Length: 4096}), data...))
	if rp, err := cl.recv(nil); err != nil || rp.errno != 0 || rp.handle != 11 {
		t.Fatalf("kernel-side write: %+v %v", rp, err)
	}
	c.Write(AppendRequest(nil, Request{Type: CmdRead, Handle: 12, Offset: 8192, Length: 4096}))
	rp, err := cl.recv(map[uint64]int{12: 4096})
	if err != nil || rp.errno != 0 || rp.handle != 12 {
		t.Fatalf("kernel-side read: %+v %v", rp, err)
	}
	if !bytes.Equal(rp.data, data) {
		t.Fatal("kernel-side read returned other data")
	}
}

func TestNetlinkConnectServesKernelSockets(t *testing.T) {
	k := &fakeKernel{t: t, connected: map[int]bool{}}
	nl := k.dial()
	defer nl.Close()
	mem := newMem(8<<20, 4096)
	d, _ := newKernelDevice(t, mem, "/dev/nbd1")
	opts := AttachOptions{Connections: 2, Timeout: 60e9, DeadConnTimeout: 120e9, Identifier: "hamirror:abc"}
	if err := d.attachNetlink(nl, fakeFamily, opts); err != nil {
		t.Fatal(err)
	}
	if d.Index != 1 || d.Path != "/dev/nbd1" || d.Reclaimed {
		t.Fatalf("device %+v", d)
	}
	if len(k.cmds) != 2 || k.cmds[0] != nlCmdStatus || k.cmds[1] != nlCmdConnect {
		t.Fatalf("commands %v, want STATUS then CONNECT", k.cmds)
	}
	want := map[uint16]uint64{
		nlAttrSizeBytes: 8 << 20, nlAttrBlockSizeBytes: 4096, nlAttrTimeout: 60, nlAttrDeadConnTimeout: 120,
		nlAttrClientFlags: 0, nlAttrServerFlags: uint64(FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes | FlagCanMultiConn),
	}
	for a, v := range want {
		if k.attrs[a] != v {
			t.Errorf("CONNECT attribute %d = %d, want %d", a, k.attrs[a], v)
		}
	}
	if k.ident != "hamirror:abc" || len(k.socks) != 2 {
		t.Fatalf("identifier %q, %d sockets", k.ident, len(k.socks))
	}
	for _, c := range k.socks {
		kernelIO(t, c)
	}
	if err := netlinkDisconnect(nl, fakeFamily, d.Index); err != nil {
		t.Fatal(err)
	}
	if !d.waitServing(5e9) {
		t.Fatal("server side still running after DISCONNECT")
	}
}

func TestNetlinkReclaimsADeviceLeftByADeadDaemon(t *testing.T) {
	k := &fakeKernel{t: t, connected: map[int]bool{0: true}}
	nl := k.dial()
	defer nl.Close()
	d, _ := newKernelDevice(t, newMem(1<<20, 512), "/dev/nbd0")
	if err := d.attachNetlink(nl, fakeFamily, AttachOptions{Connections: 1, DeadConnTimeout: 120e9, Identifier: "hamirror:x"}); err != nil {
		t.Fatal(err)
	}
	if !d.Reclaimed || k.cmds[len(k.cmds)-1] != nlCmdReconfigure || k.ident != "hamirror:x" || len(k.socks) != 1 {
		t.Fatalf("reclaimed=%v commands %v ident %q socks %d", d.Reclaimed, k.cmds, k.ident, len(k.socks))
	}
	kernelIO(t, k.socks[0])
	k.socks[0].Close()
	d.waitServing(5e9)

	// A device held by a live server: RECONFIGURE finds no dead socket.
	k2 := &fakeKernel{t: t, connected: map[int]bool{2: true}, err: genltest.Error(int(unix.ENOSPC))}
	nl2 := k2.dial()
	defer nl2.Close()
	d2, _ := newKernelDevice(t, newMem(1<<20, 512), "/dev/nbd2")
	err := d2.attachNetlink(nl2, fakeFamily, AttachOptions{Connections: 1})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("live server")) {
		t.Fatalf("reclaim of a live device: %v", err)
	}
	d2.stopServing()
}

func TestNetlinkConnectErrors(t *testing.T) {
	k := &fakeKernel{t: t, connected: map[int]bool{}, err: genltest.Error(int(unix.EBUSY))}
	nl := k.dial()
	defer nl.Close()
	d, _ := newKernelDevice(t, newMem(1<<20, 512), "/dev/nbd1")
	err := d.attachNetlink(nl, fakeFamily, AttachOptions{Connections: 1})
	if err == nil || !errors.Is(err, unix.EBUSY) {
		t.Fatalf("busy device: %v", err)
	}
	d.stopServing() // the kernel never took the sockets: serving ends
	// A device index the kernel does not have yet is not connected:
	// CONNECT with that index creates it.
	k2 := &fakeKernel{t: t, connected: map[int]bool{}}
	nl2 := k2.dial()
	defer nl2.Close()
	if st, err := netlinkStatus(nl2, fakeFamily, 9); err != nil || st.Connected || st.Index != 9 {
		t.Fatalf("status of a missing device: %+v, %v", st, err)
	}
}

func TestNetlinkMessageEncoding(t *testing.T) {
	b, err := encodeConnect(connectConfig{Index: -1, SizeBytes: 1 << 30, BlockSize: 512, ServerFlags: 0x10d, FDs: []int{7, 8}})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		t.Fatal(err)
	}
	types := map[uint16]bool{}
	for _, a := range attrs {
		types[a.Type&^netlink.Nested] = true
	}
	if types[nlAttrIndex] || !types[nlAttrSizeBytes] || !types[nlAttrSockets] || types[nlAttrTimeout] {
		t.Fatalf("attributes %v: index must be absent (kernel picks), size and sockets present, timeout absent when 0", types)
	}
	for _, bad := range []connectConfig{
		{SizeBytes: 1 << 20, BlockSize: 512},                    // no sockets
		{SizeBytes: 1 << 20, BlockSize: 8192, FDs: []int{1}},    // block too big for the kernel
		{SizeBytes: 1 << 20, BlockSize: 1000, FDs: []int{1}},    // not a power of two
		{SizeBytes: 0, BlockSize: 512, FDs: []int{1}, Index: 0}, // empty
	} {
		if _, err := encodeConnect(bad); err == nil {
			t.Errorf("encodeConnect(%+v) accepted", bad)
		}
	}
	if _, err := encodeReconfigure(-1, "", 0, []int{1}); err == nil {
		t.Error("reconfigure without an index accepted")
	}
	if _, err := decodeIndex(nil); err == nil {
		t.Error("reply without index accepted")
	}
	if _, err := decodeStatus([]byte{1, 2, 3}); err == nil {
		t.Error("truncated status accepted")
	}
	for _, p := range []string{"/dev/sda", "/dev/nbdx", "nbd-1"} {
		if _, err := deviceIndex(p); err == nil {
			t.Errorf("device path %q accepted", p)
		}
	}
	if n, err := deviceIndex("/dev/nbd12"); n != 12 || err != nil {
		t.Errorf("deviceIndex(/dev/nbd12) = %d, %v", n, err)
	}
}

// The kernel shuts one connection (a request timed out): mirrord gives it a
// new one with RECONFIGURE instead of leaving the device one socket short.
func TestLostKernelConnectionIsReplaced(t *testing.T) {
	k := &fakeKernel{t: t, connected: map[int]bool{}, reconf: make(chan int, 1)}
	nl := k.dial()
	defer nl.Close()
	d, _ := newKernelDevice(t, newMem(1<<20, 512), "/dev/nbd0")
	d.dialNL = func() (nbdGenl, genetlink.Family, func(), error) { return nl, fakeFamily, func() {}, nil }
	if err := d.attachNetlink(nl, fakeFamily, AttachOptions{Connections: 2, Identifier: "hamirror:y"}); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	first := k.socks[0]
	k.mu.Unlock()
	d.startMonitor()
	first.Close() // the kernel's shutdown of a timed-out socket
	select {
	case n := <-k.reconf:
		if n != 1 {
			t.Fatalf("RECONFIGURE with %d sockets, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lost connection was not replaced")
	}
	k.mu.Lock()
	ident, socks := k.ident, append([]net.Conn(nil), k.socks...)
	k.mu.Unlock()
	if ident != "hamirror:y" || len(socks) != 3 {
		t.Fatalf("identifier %q, %d sockets taken", ident, len(socks))
	}
	kernelIO(t, socks[2])
	kernelIO(t, socks[1])

	// Detaching does not trigger replacements.
	d.detaching.Store(true)
	close(d.stopMonitor)
	<-d.monitorDone
	if err := netlinkDisconnect(nl, fakeFamily, 0); err != nil {
		t.Fatal(err)
	}
	if !d.waitServing(5 * time.Second) {
		t.Fatal("server side still running after DISCONNECT")
	}
	select {
	case <-k.reconf:
		t.Fatal("RECONFIGURE during detach")
	default:
	}
}
