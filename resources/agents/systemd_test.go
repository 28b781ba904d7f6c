package agents

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/hamirror/hamirror/heartbeat"
)

func TestSystemdUnitNames(t *testing.T) {
	for _, tc := range []struct {
		unit string
		ok   bool
	}{
		{"app.service", true}, {"getty@tty1.service", true}, {"srv-data.mount", true}, {"x\\x2dy.service", true},
		{"app", false}, {"app.device", false}, {"app.scope", false}, {"getty@.service", false},
		{"a b.service", false}, {"@x.service", false}, {".service", false}, {strings.Repeat("a", 250) + ".service", false},
	} {
		_, err := New("resources[7]", "systemd", "u", map[string]any{"unit": tc.unit}, Env{})
		var ke *heartbeat.KeyError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%q refused: %v", tc.unit, err)
		case !tc.ok && (!errors.As(err, &ke) || ke.Key != "resources[7].unit"):
			t.Errorf("%q: %v, want a KeyError at resources[7].unit", tc.unit, err)
		}
	}
}

// Without a system bus (no systemd here), every call says so.
func TestSystemdWithoutDBus(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "no-bus"))
	a, err := New("resources[7]", "systemd", "app", map[string]any{"unit": "app.service"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 5*time.Second)
	for what, call := range map[string]func() error{
		"Start": func() error { return a.Start(ctx) }, "Stop": func() error { return a.Stop(ctx) }, "Monitor": func() error { return a.Monitor(ctx) },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "is systemd PID 1 with dbus running") {
			t.Errorf("%s without a bus: %v", what, err)
		}
	}
}

// fakeSystemd answers the part of org.freedesktop.systemd1 the agent
// uses (StartUnit, StopUnit, JobRemoved, unit properties) on a private
// dbus-daemon. A fake because this machine has no systemd PID 1; the
// bus, the go-systemd client and the agent are real.
type fakeSystemd struct {
	conn  *dbus.Conn
	mu    sync.Mutex
	units map[string]*fakeUnit
	jobs  uint32
}

type fakeUnit struct {
	load, active, sub, file string
	startResult             string // the start job's result ("done", "failed", ...)
	endState                string // ActiveState after a done start
}

func (f *fakeSystemd) job(unit, what string) (dbus.ObjectPath, *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.units[unit]
	if !ok {
		return "", dbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit " + unit + " not found."})
	}
	f.jobs++
	id := f.jobs
	path := dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/systemd1/job/%d", id))
	result := "done"
	if what == "start" {
		result = u.startResult
		if result == "done" {
			u.active, u.sub = u.endState, "running"
		} else {
			u.active, u.sub = "failed", "failed"
		}
	} else {
		u.active, u.sub = "inactive", "dead"
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		f.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", id, path, unit, result)
	}()
	return path, nil
}

type fakeManager struct{ f *fakeSystemd }

func (m fakeManager) StartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	return m.f.job(name, "start")
}

func (m fakeManager) StopUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	return m.f.job(name, "stop")
}

type fakeProps struct {
	f    *fakeSystemd
	unit string
}

func (p fakeProps) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	u, ok := p.f.units[p.unit]
	if !ok {
		u = &fakeUnit{load: "not-found", active: "inactive", sub: "dead"}
	}
	return map[string]dbus.Variant{"LoadState": dbus.MakeVariant(u.load), "ActiveState": dbus.MakeVariant(u.active),
		"SubState": dbus.MakeVariant(u.sub), "UnitFileState": dbus.MakeVariant(u.file)}, nil
}

// startFakeSystemd runs a private dbus-daemon, points the system bus
// address at it and serves the fake manager and units there.
func startFakeSystemd(t *testing.T, units map[string]*fakeUnit) *fakeSystemd {
	t.Helper()
	needTool(t, "dbus-daemon", "dbus-daemon")
	dir := t.TempDir()
	sock := filepath.Join(dir, "bus")
	conf := filepath.Join(dir, "bus.conf")
	os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>custom</type><listen>unix:path=`+sock+`</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*"/><allow receive_sender="*"/><allow own="*"/></policy></busconfig>`), 0o644)
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--print-address")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon printed no address: %v", err)
	}
	addr = strings.TrimSpace(addr)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeSystemd{conn: conn, units: units}
	if err := conn.Export(fakeManager{f}, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app.service", "broken.service", "missing.service", "oneshot.service"} {
		path := dbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sdbus.PathBusEscape(name))
		if err := conn.Export(fakeProps{f, name}, path, "org.freedesktop.DBus.Properties"); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning org.freedesktop.systemd1: %v %v", r, err)
	}
	return f
}

func TestSystemdOverDBus(t *testing.T) {
	startFakeSystemd(t, map[string]*fakeUnit{
		"app.service":     {load: "loaded", active: "inactive", sub: "dead", file: "disabled", startResult: "done", endState: "active"},
		"broken.service":  {load: "loaded", active: "inactive", sub: "dead", file: "enabled", startResult: "failed"},
		"oneshot.service": {load: "loaded", active: "inactive", sub: "dead", startResult: "done", endState: "inactive"},
	})
	ctx := ctxFor(t, 20*time.Second)
	agent := func(unit string) *systemdAgent {
		env, _ := testEnv(t)
		a, err := New("resources[7]", "systemd", "svc", map[string]any{"unit": unit}, env)
		if err != nil {
			t.Fatal(err)
		}
		return a.(*systemdAgent)
	}
	a := agent("app.service")
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop of an inactive unit: %v", err)
	}
	mustNotRunning(t, a.Monitor(ctx))
	twice(t, "Start", func() error { return a.Start(ctx) })
	if err := a.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	twice(t, "Stop", func() error { return a.Stop(ctx) })
	mustNotRunning(t, a.Monitor(ctx))

	b := agent("broken.service")
	mustFailed(t, b.Start(ctx), `ended "failed"`)
	mustFailed(t, b.Monitor(ctx), "journalctl -u broken.service")
	if err := b.Stop(ctx); err != nil {
		t.Fatalf("Stop of a failed unit: %v", err)
	}

	m := agent("missing.service")
	mustFailed(t, m.Start(ctx), "no unit missing.service")
	mustNotRunning(t, m.Monitor(ctx))
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop of a missing unit: %v", err)
	}

	o := agent("oneshot.service")
	mustFailed(t, o.Start(ctx), "the start job ended but")
}
