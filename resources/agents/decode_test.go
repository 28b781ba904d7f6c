package agents

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const sampleMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
36 22 7:3 / /srv/my\040data rw,noatime - ext4 /dev/loop3 rw
37 36 0:50 / /srv/my\040data/sub rw - tmpfs none rw
38 22 7:3 / /mnt/again ro,relatime master:2 - ext4 /dev/loop3 ro
39 22 0:51 / /srv/my\040data rw - tmpfs back\134slash rw
`

func TestParseMountinfo(t *testing.T) {
	mi, err := parseMountinfo([]byte(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(mi) != 5 {
		t.Fatalf("%d entries, want 5", len(mi))
	}
	e := mi[1]
	if e.id != 36 || e.parent != 22 || e.major != 7 || e.minor != 3 || e.mountPoint != "/srv/my data" || e.fstype != "ext4" || e.source != "/dev/loop3" {
		t.Errorf("entry 1 = %+v", e)
	}
	if !mi[3].readOnly() || mi[1].readOnly() || mi[0].readOnly() {
		t.Errorf("readOnly wrong: %v %v", mi[3].readOnly(), mi[1].readOnly())
	}
	if top, ok := mountAt(mi, "/srv/my data"); !ok || top.fstype != "tmpfs" || top.source != `back\slash` {
		t.Errorf("the visible mount at /srv/my data is %+v, want the last one stacked (tmpfs)", top)
	}
	if got := mountsOf(mi, 7, 3); len(got) != 2 || got[1] != "/mnt/again" {
		t.Errorf("mountsOf = %v", got)
	}
	if got := mountsBelow(mi, "/srv/my data"); len(got) != 1 || got[0] != "/srv/my data/sub" {
		t.Errorf("mountsBelow = %v", got)
	}
	for _, bad := range []string{
		"22 1 8:1 / / rw - ext4",                     // fields missing
		"x 1 8:1 / / rw - ext4 /dev/sda1 rw",         // id
		"22 1 81 / / rw - ext4 /dev/sda1 rw",         // device number
		"22 1 8:1 / rel rw - ext4 /dev/sda1 rw",      // relative mount point
		"22 1 8:1 / /a\\04 rw - ext4 /dev/sda1 rw",   // truncated escape
		"22 1 8:1 / /a\\999 rw - ext4 /dev/sda1 rw",  // bad escape
		"22 1 8:1 / / rw shared:1 ext4 /dev/sda1 rw", // no separator
	} {
		if _, err := parseMountinfo([]byte(bad + "\n")); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// Our own mount table parses.
	if _, err := readMountinfo("/proc/self/mountinfo"); err != nil {
		t.Fatal(err)
	}
}

func super(state uint16, compat, incompat uint32) []byte {
	b := make([]byte, ext4SuperSize)
	binary.LittleEndian.PutUint16(b[ext4MagicOff:], ext4Magic)
	binary.LittleEndian.PutUint16(b[ext4StateOff:], state)
	binary.LittleEndian.PutUint32(b[ext4CompatOff:], compat)
	binary.LittleEndian.PutUint32(b[ext4IncompatOff:], incompat)
	return b
}

func TestNeedsFsck(t *testing.T) {
	for _, tc := range []struct {
		name             string
		state            uint16
		compat, incompat uint32
		want             bool
	}{
		{"clean journaled", ext4StateValid, ext4CompatJournal, 0, false},
		{"crashed journaled (clean + needs_recovery)", ext4StateValid, ext4CompatJournal, ext4IncompatRecov, false},
		{"unclean with a replay pending", 0, ext4CompatJournal, ext4IncompatRecov, false},
		{"unclean journaled, nothing to replay", 0, ext4CompatJournal, 0, true},
		{"unclean without a journal (ext2)", 0, 0, 0, true},
		{"clean ext2", ext4StateValid, 0, 0, false},
		{"errors recorded", ext4StateValid | ext4StateError, ext4CompatJournal, 0, true},
		{"errors and a replay", ext4StateError, ext4CompatJournal, ext4IncompatRecov, true},
	} {
		s, err := parseExt4Super(super(tc.state, tc.compat, tc.incompat))
		if err != nil {
			t.Fatal(err)
		}
		if got, why := needsFsck(s); got != tc.want {
			t.Errorf("%s: needsFsck = %v (%s), want %v", tc.name, got, why, tc.want)
		}
	}
	if _, err := parseExt4Super(make([]byte, ext4SuperSize)); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Errorf("a zero superblock: %v", err)
	}
	if _, err := parseExt4Super(super(1, 0, ext4IncompatJDev)); err == nil {
		t.Error("an external journal device parsed as a file system")
	}
	if _, err := parseExt4Super(make([]byte, 10)); err == nil {
		t.Error("a short superblock parsed")
	}
}

func TestParseMountOptions(t *testing.T) {
	flags, data, err := parseMountOptions("defaults,noatime,nodev,ro,rw,errors=remount-ro,discard")
	if err != nil {
		t.Fatal(err)
	}
	if flags != unix.MS_NOATIME|unix.MS_NODEV || data != "errors=remount-ro,discard" {
		t.Errorf("flags %#x data %q", flags, data)
	}
	for _, bad := range []string{"loop", "noatime,,nodev", "x-systemd.automount", "nofail", "bind", "a b"} {
		if _, _, err := parseMountOptions(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestMapsUseDevice(t *testing.T) {
	maps := []byte(`55d0c4a00000-55d0c4a02000 r--p 00000000 fd:01 1234  /usr/bin/sleep
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
7f0000002000-7f0000003000 r--s 00000000 07:03 99  /srv/data/db.map
`)
	if !mapsUseDevice(maps, unix.Mkdev(7, 3)) {
		t.Error("the mapping of 07:03 was missed")
	}
	if mapsUseDevice(maps, unix.Mkdev(0, 0)) {
		t.Error("an anonymous mapping counted as the device")
	}
	if !mapsUseDevice(maps, unix.Mkdev(0xfd, 1)) || mapsUseDevice(maps, unix.Mkdev(8, 1)) {
		t.Error("device numbers compared wrongly")
	}
}

func TestStalePid(t *testing.T) {
	dir := t.TempDir()
	self := strconv.Itoa(os.Getpid())
	wd, _ := os.Getwd()
	for _, tc := range []struct {
		lock  string
		data  string
		stale bool
	}{
		{self + "\n" + wd + "\n", wd, false},                  // alive, working in the data directory
		{"-" + self + "\n", wd, false},                        // a standalone backend writes its PID negated
		{self + "\n", filepath.Join(dir, "pg"), true},         // alive, elsewhere: a recycled PID
		{"999999999\n", wd, true},                             // gone
		{"\n", wd, true}, {"abc\n", wd, true}, {"", wd, true}, // no PID
	} {
		if stale, why := stalePid("/proc", []byte(tc.lock), tc.data); stale != tc.stale {
			t.Errorf("lock %q, datadir %s: stale = %v (%s), want %v", tc.lock, tc.data, stale, why, tc.stale)
		}
	}
}

func TestParseOCFMetadata(t *testing.T) {
	md, err := parseOCFMetadata([]byte(`<?xml version="1.0"?><resource-agent name="X"><parameters>
<parameter name="n" required="1"><content type="integer"/></parameter>
<parameter name="m"><content type="select"><option value="a"/><option value="b"/></content></parameter>
</parameters><actions><action name="start"/><action name="stop"/><action name="monitor"/></actions></resource-agent>`))
	if err != nil {
		t.Fatal(err)
	}
	if e := md.check(map[string]string{"n": "3", "m": "b"}); e != nil {
		t.Errorf("valid params refused: %v", e)
	}
	for vals, param := range map[string]string{"m=a": ".n", "n=x": ".n", "n=1,m=c": ".m", "n=1,z=1": ".z"} {
		m := map[string]string{}
		for kv := range strings.SplitSeq(vals, ",") {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		if e := md.check(m); e == nil || e.param != param {
			t.Errorf("%s: %v, want an error at %s", vals, e, param)
		}
	}
	noMonitor, _ := parseOCFMetadata([]byte(`<resource-agent name="Y"><actions><action name="start"/><action name="stop"/></actions></resource-agent>`))
	if e := noMonitor.check(nil); e == nil || !strings.Contains(e.msg, "monitor") {
		t.Errorf("an agent without monitor: %v", e)
	}
	for _, bad := range []string{"", "<html/>", `<resource-agent><parameters><parameter name="a b"/></parameters></resource-agent>`,
		`<resource-agent><parameters><parameter name="a"/><parameter name="a"/></parameters></resource-agent>`,
		`<resource-agent><parameters><parameter name="a" required="maybe"/></parameters></resource-agent>`} {
		if _, err := parseOCFMetadata([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestLastLinesAndExitReason(t *testing.T) {
	out := []byte("one\n\ntwo\nocf-exit-reason:disk gone\nthree\n")
	if got := lastLines(out, 2); got != "ocf-exit-reason:disk gone | three" {
		t.Errorf("lastLines = %q", got)
	}
	if got := lastLines(nil, 2); got != "(none)" {
		t.Errorf("lastLines(nil) = %q", got)
	}
	if got := exitReason(out); got != "disk gone" {
		t.Errorf("exitReason = %q", got)
	}
	if got := shellQuote("/a b/it's"); got != `'/a b/it'\''s'` {
		t.Errorf("shellQuote = %s", got)
	}
}
