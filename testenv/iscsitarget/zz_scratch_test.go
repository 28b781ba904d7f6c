package iscsitarget

import (
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

func TestScratchCaps(t *testing.T) {
	td, _ := newTgtd(t, 8<<20, "")
	cfg := iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:node1", Timeout: time.Second, ReconnectInterval: 100 * time.Millisecond}
	n1 := openDisk(t, legURL(td), cfg)
	c, err := n1.ReportCapabilities()
	t.Logf("caps %+v %v", c, err)
	n2 := openDisk(t, legURL(td), iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.test:node2"})
	var g iscsi.RegistrationGroup
	if err := n1.EnsureRegistered(0x11); err != nil { t.Fatal(err) }
	n1.KeepRegistered(0x11, &g)
	if err := n2.Register(0, 0x22); err != nil { t.Fatal(err) }
	if err := n2.Reserve(0x22, iscsi.WriteExclusiveRegistrantsOnly); err != nil { t.Fatal(err) }
	ok, err := n1.IsRegistered(0x11)
	t.Logf("registered %v %v", ok, err)
	td.Pause()
	time.Sleep(2500 * time.Millisecond)
	td.Resume()
	for i := 0; i < 50 && n1.Stats().Reconnects == 0; i++ { time.Sleep(100 * time.Millisecond) }
	t.Logf("stats %+v", n1.Stats())
	err = n1.WriteAt(make([]byte, 4096), 0, false)
	t.Logf("n1 write after reconnect: %v", err)
	_, keys, _ := n2.ReadKeys()
	t.Logf("keys %x", keys)
}
