package agents

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	sdbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/hamirror/hamirror/resources"
)

// systemdAgent starts, stops and watches a systemd unit over D-Bus.
//
//	type: systemd
//	unit: app.service        # a full unit name: service, socket, target, mount, automount, swap, timer or path
//
// Start queues a start job ("replace") and waits for its result; Stop a
// stop job. Monitor reads the unit's ActiveState: active or reloading is
// running, inactive is resources.ErrNotRunning, failed, activating
// (systemd restarting it by itself) and deactivating are failures. A
// unit the cluster runs should be disabled (systemctl disable), or it
// would also start at boot on both nodes: Start warns when it is
// enabled. A Type=oneshot unit without RemainAfterExit=yes goes
// inactive when done: Monitor then reports it not running.
//
// mirrord talks to the system bus (DBUS_SYSTEM_BUS_ADDRESS, default
// /run/dbus/system_bus_socket), one connection per call.
type systemdAgent struct {
	name, unit string
	log        *slog.Logger
}

// startableUnitTypes are the unit types a start job means something for.
func startableUnitType(suffix string) bool {
	switch suffix {
	case "service", "socket", "target", "mount", "automount", "swap", "timer", "path":
		return true
	}
	return false
}

// validUnitName checks a unit name the way systemd does (unit-name.c):
// at most 255 bytes, [A-Za-z0-9:_.\-] plus one '@' for a template
// instance, a known suffix; a template without an instance cannot run.
func validUnitName(u string) error {
	dot := strings.LastIndexByte(u, '.')
	if len(u) > 255 || dot <= 0 {
		return fmt.Errorf("%q is not a unit name: write it in full, such as app.service", u)
	}
	if !startableUnitType(u[dot+1:]) {
		return fmt.Errorf("%q: .%s units cannot be started by the cluster (use service, socket, target, mount, automount, swap, timer or path)", u, u[dot+1:])
	}
	prefix := u[:dot]
	for _, c := range []byte(prefix) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":_.\\-@", c) >= 0) {
			return fmt.Errorf("%q has the character %q, not allowed in unit names (systemd-escape makes a name)", u, c)
		}
	}
	if n := strings.Count(prefix, "@"); n > 1 || prefix[0] == '@' {
		return fmt.Errorf("%q is not a valid unit name", u)
	} else if n == 1 && strings.HasSuffix(prefix, "@") {
		return fmt.Errorf("%q is a template: name an instance, such as %s", u, strings.Replace(u, "@.", "@main.", 1))
	}
	return nil
}

func newSystemd(name string, p *params, env Env) (resources.Agent, error) {
	a := &systemdAgent{name: name, log: env.Log}
	a.unit = p.str("unit", true, "")
	if a.unit != "" {
		if err := validUnitName(a.unit); err != nil {
			p.fail("unit", "%v", err)
		}
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *systemdAgent) connect(ctx context.Context) (*sdbus.Conn, error) {
	c, err := sdbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("systemd %s: cannot reach systemd over the D-Bus system bus: %w (is systemd PID 1 with dbus running? the systemd resource type needs both)", a.name, err)
	}
	return c, nil
}

// unitState reads the unit's LoadState, ActiveState, SubState and
// UnitFileState.
type unitState struct{ load, active, sub, file string }

func (a *systemdAgent) state(ctx context.Context, c *sdbus.Conn) (unitState, error) {
	props, err := c.GetUnitPropertiesContext(ctx, a.unit)
	if err != nil {
		return unitState{}, fmt.Errorf("systemd %s: reading %s: %w", a.name, a.unit, err)
	}
	str := func(k string) string { s, _ := props[k].(string); return s }
	return unitState{load: str("LoadState"), active: str("ActiveState"), sub: str("SubState"), file: str("UnitFileState")}, nil
}

// withUnit connects, reads the unit's state and calls fn with both.
func (a *systemdAgent) withUnit(ctx context.Context, fn func(*sdbus.Conn, unitState) error) error {
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := a.state(ctx, c)
	if err != nil {
		return err
	}
	return fn(c, st)
}

func (a *systemdAgent) Monitor(ctx context.Context) error {
	return a.withUnit(ctx, func(_ *sdbus.Conn, st unitState) error { return a.judge(st) })
}

// judge maps a unit's state to Monitor's answer.
func (a *systemdAgent) judge(st unitState) error {
	switch {
	case st.load == "not-found":
		return fmt.Errorf("systemd %s: %s is not installed: %w", a.name, a.unit, resources.ErrNotRunning)
	case st.active == "active", st.active == "reloading":
		return nil
	case st.active == "inactive":
		return fmt.Errorf("systemd %s: %s is inactive: %w", a.name, a.unit, resources.ErrNotRunning)
	case st.active == "failed":
		return fmt.Errorf("systemd %s: %s failed (%s): see systemctl status %s and journalctl -u %s", a.name, a.unit, st.sub, a.unit, a.unit)
	}
	return fmt.Errorf("systemd %s: %s is %s (%s), not running steadily", a.name, a.unit, st.active, st.sub)
}

// job runs a start or stop job and waits for its result.
func (a *systemdAgent) job(ctx context.Context, c *sdbus.Conn, what string) error {
	ch := make(chan string, 1)
	var err error
	if what == "start" {
		_, err = c.StartUnitContext(ctx, a.unit, "replace", ch)
	} else {
		_, err = c.StopUnitContext(ctx, a.unit, "replace", ch)
	}
	if err != nil {
		return fmt.Errorf("systemd %s: %s %s: %w", a.name, what, a.unit, err)
	}
	select {
	case r := <-ch:
		if r == "done" || (what == "start" && r == "skipped") {
			return nil
		}
		return fmt.Errorf("systemd %s: the %s job of %s ended %q: see systemctl status %s and journalctl -u %s", a.name, what, a.unit, r, a.unit, a.unit)
	case <-ctx.Done():
		return fmt.Errorf("systemd %s: the %s job of %s did not finish in time (%w); systemd goes on with it", a.name, what, a.unit, ctx.Err())
	}
}

func (a *systemdAgent) Start(ctx context.Context) error {
	return a.withUnit(ctx, func(c *sdbus.Conn, st unitState) error { return a.start(ctx, c, st) })
}

func (a *systemdAgent) start(ctx context.Context, c *sdbus.Conn, st unitState) error {
	switch {
	case st.load == "not-found":
		return fmt.Errorf("systemd %s: no unit %s on this node: install it or fix the name", a.name, a.unit)
	case st.load == "masked":
		return fmt.Errorf("systemd %s: %s is masked: systemctl unmask %s", a.name, a.unit, a.unit)
	case st.active == "active":
		return nil
	}
	if st.file == "enabled" {
		a.log.Warn("the unit is enabled: it also starts at boot, outside the cluster's control; systemctl disable it", "unit", a.unit)
	}
	if err := a.job(ctx, c, "start"); err != nil {
		return err
	}
	st, err := a.state(ctx, c)
	if err != nil {
		return err
	}
	if err := a.judge(st); err != nil {
		return fmt.Errorf("the start job ended but: %v", err) // not ErrNotRunning: a failed start
	}
	return nil
}

func (a *systemdAgent) Stop(ctx context.Context) error {
	return a.withUnit(ctx, func(c *sdbus.Conn, st unitState) error { return a.stop(ctx, c, st) })
}

func (a *systemdAgent) stop(ctx context.Context, c *sdbus.Conn, st unitState) error {
	if st.load == "not-found" || st.active == "inactive" {
		return nil
	}
	if err := a.job(ctx, c, "stop"); err != nil {
		return err
	}
	st, err := a.state(ctx, c)
	if err != nil {
		return err
	}
	if st.active != "inactive" && st.active != "failed" {
		return fmt.Errorf("systemd %s: the stop job ended but %s is %s (%s): see systemctl status %s", a.name, a.unit, st.active, st.sub, a.unit)
	}
	return nil
}
