package agents

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hamirror/hamirror/resources"
)

// OCF exit codes (OCF resource agent API 1.1).
const (
	ocfSuccess          = 0
	ocfErrGeneric       = 1
	ocfErrArgs          = 2
	ocfErrUnimplemented = 3
	ocfErrPerm          = 4
	ocfErrInstalled     = 5
	ocfErrConfigured    = 6
	ocfNotRunning       = 7
	ocfRunningPromoted  = 8
	ocfFailedPromoted   = 9
	ocfDegraded         = 190
	ocfDegradedPromoted = 191
)

// ocfMeaning says what an OCF exit code means and what to do about it.
func ocfMeaning(code int) string {
	switch code {
	case ocfSuccess:
		return "success"
	case ocfErrGeneric:
		return "generic error: see the agent's output"
	case ocfErrArgs:
		return "invalid arguments: fix the resource's params"
	case ocfErrUnimplemented:
		return "the agent does not implement this action"
	case ocfErrPerm:
		return "insufficient privileges: run mirrord as root"
	case ocfErrInstalled:
		return "not installed: install on this node what the agent manages"
	case ocfErrConfigured:
		return "not configured: the params are wrong on every node, fix them"
	case ocfNotRunning:
		return "not running"
	case ocfRunningPromoted:
		return "running promoted"
	case ocfFailedPromoted:
		return "failed while promoted"
	case ocfDegraded:
		return "running degraded"
	case ocfDegradedPromoted:
		return "running promoted, degraded"
	}
	return "not an OCF exit code"
}

// ExitError is an unsuccessful exit of an exec or ocf agent's command.
type ExitError struct {
	Resource string // the resource's name
	Action   string // start, stop, monitor, meta-data
	Code     int    // the exit status
	Meaning  string // what Code means (the OCF meaning for ocf agents)
	Reason   string // the agent's ocf-exit-reason, else the last lines of its output
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("%s: %s exited %d (%s): %s", e.Resource, e.Action, e.Code, e.Meaning, e.Reason)
}

// ocfRecurringInterval is OCF_RESKEY_CRM_meta_interval for a monitor
// after this agent started the resource. Agents only test it against 0
// (0 is a probe: "is it running here?", answered leniently); the real
// interval is the group's business, not passed to agents.
const ocfRecurringInterval = 10 * time.Second

// ocfAgent runs an existing OCF resource agent, such as Debian's
// resource-agents, unchanged.
//
//	type: ocf
//	agent: heartbeat:IPaddr2          # provider:type under OCF root/resource.d (ocf: prefix allowed)
//	params: {ip: 192.0.2.10, cidr_netmask: 24, nic: eth1}   # each becomes OCF_RESKEY_<name>
//	check_level: 0                    # optional OCF_CHECK_LEVEL for monitor (0, 10, 20)
//
// The params are checked at construction against the agent's meta-data
// (unknown names, required ones missing, integer/boolean/select values)
// when the agent answers meta-data. Exit codes: start 0 = started; stop 0
// or 7 = stopped; monitor 0 = running, 7 = not running
// (resources.ErrNotRunning), 8 (promoted; hamirror does not promote) and
// 190/191 (degraded, logged) = running, anything else failed. A probe
// (a monitor before this agent started the resource, meta interval 0)
// that answers 5 (not installed) means not running: software absent from
// this node runs nothing here.
type ocfAgent struct {
	name, provider, typ, path string
	rsctmp                    string
	env                       []string // OCF_ROOT, OCF_RESKEY_*, ... (not the per-call timeout and interval)
	started                   atomic.Bool
	log                       *slog.Logger
}

var (
	ocfAgentName = regexp.MustCompile(`^(ocf:)?([A-Za-z0-9_.+-]+):([A-Za-z0-9_.+-]+)$`)
	ocfParamName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// metadataTimeout bounds the meta-data call made while loading the config.
const metadataTimeout = 10 * time.Second

func newOCF(name string, p *params, env Env) (resources.Agent, error) {
	a := &ocfAgent{name: name, log: env.Log}
	spec := p.str("agent", true, "")
	m := ocfAgentName.FindStringSubmatch(spec)
	if spec != "" && m == nil {
		p.fail("agent", "must be provider:type such as heartbeat:IPaddr2, got %q", spec)
	}
	var vals map[string]string
	raw, hasParams := p.get("params")
	if hasParams {
		vals = ocfValues(p, raw)
	}
	level := p.integer("check_level", 0, 0, 100)
	if err := p.done(); err != nil {
		return nil, err
	}
	a.provider, a.typ = m[2], m[3]
	a.path = filepath.Join(env.OCFRoot, "resource.d", a.provider, a.typ)
	if st, err := os.Stat(a.path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		p.fail("agent", "%s is not an executable OCF agent (install the package that ships it, e.g. resource-agents, or fix the name)", a.path)
		return nil, p.err
	}
	a.rsctmp = filepath.Join(env.RunDir, "ocf")
	a.env = []string{
		"OCF_ROOT=" + env.OCFRoot,
		"OCF_RA_VERSION_MAJOR=1", "OCF_RA_VERSION_MINOR=1",
		"OCF_RESOURCE_INSTANCE=" + name,
		"OCF_RESOURCE_TYPE=" + a.typ,
		"OCF_RESOURCE_PROVIDER=" + a.provider,
		"OCF_CHECK_LEVEL=" + strconv.Itoa(level),
		"HA_RSCTMP=" + a.rsctmp,
		"HA_LOGFACILITY=none", // ocf_log writes to stderr, which we log
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		a.env = append(a.env, "OCF_RESKEY_"+k+"="+vals[k])
	}
	if err := a.checkMetadata(p, vals); err != nil {
		return nil, err
	}
	return a, nil
}

// ocfValues renders the params map as OCF_RESKEY_ values.
func ocfValues(p *params, raw any) map[string]string {
	m, ok := raw.(map[string]any)
	if !ok {
		p.fail("params", "must be a map of parameter names to values, got %s", describe(raw))
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		key := "params." + k
		if !ocfParamName.MatchString(k) {
			p.fail(key, "is not a valid OCF parameter name (letters, digits and _)")
			continue
		}
		switch x := v.(type) {
		case string:
			if strings.ContainsRune(x, 0) {
				p.fail(key, "contains a NUL byte")
			}
			out[k] = x
		case bool:
			out[k] = strconv.FormatBool(x)
		case int:
			out[k] = strconv.Itoa(x)
		case int64:
			out[k] = strconv.FormatInt(x, 10)
		case uint64:
			out[k] = strconv.FormatUint(x, 10)
		case float64:
			if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
				out[k] = strconv.FormatInt(int64(x), 10)
			} else {
				out[k] = strconv.FormatFloat(x, 'g', -1, 64)
			}
		default:
			p.fail(key, "must be a string, number or boolean, got %s", describe(v))
		}
	}
	return out
}

// checkMetadata runs the agent's meta-data action and checks the params
// against it. An agent without usable meta-data is only logged.
func (a *ocfAgent) checkMetadata(p *params, vals map[string]string) error {
	ctx, cancel := context.WithTimeout(context.Background(), metadataTimeout)
	defer cancel()
	res, err := a.call(ctx, "meta-data", 0)
	if err != nil || res.code != 0 {
		a.log.Warn("OCF agent gave no meta-data; its params are not checked", "agent", a.path, "code", res.code, "err", err)
		return nil
	}
	md, err := parseOCFMetadata(res.output)
	if err != nil {
		a.log.Warn("OCF agent meta-data unreadable; its params are not checked", "agent", a.path, "err", err)
		return nil
	}
	if err := md.check(vals); err != nil {
		p.fail("params"+err.param, "%s", err.msg)
		return p.err
	}
	return nil
}

// call runs one action. interval is the OCF meta interval (0: a probe
// or a non-monitor action).
func (a *ocfAgent) call(ctx context.Context, action string, interval time.Duration) (result, error) {
	// HA_RSCTMP must exist (Pacemaker's packages create theirs at boot);
	// reading the meta-data (a config check) writes nothing.
	if action != "meta-data" {
		if err := os.MkdirAll(a.rsctmp, 0o755); err != nil {
			return result{code: -1}, fmt.Errorf("creating HA_RSCTMP: %w", err)
		}
	}
	env := append(slices.Clip(a.env), "__OCF_ACTION="+action,
		"OCF_RESKEY_CRM_meta_interval="+strconv.FormatInt(interval.Milliseconds(), 10))
	if dl, ok := ctx.Deadline(); ok {
		env = append(env, "OCF_RESKEY_CRM_meta_timeout="+strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10))
	}
	return run(ctx, a.log, command{argv: []string{a.path, action}, env: env})
}

func (a *ocfAgent) exitError(action string, res result) *ExitError {
	reason := exitReason(res.output)
	if reason == "" {
		reason = lastLines(res.output, 5)
	}
	return &ExitError{Resource: a.name, Action: action, Code: res.code, Meaning: ocfMeaning(res.code), Reason: reason}
}

// exitReason returns the agent's ocf-exit-reason lines (the OCF way of
// saying why it failed), joined.
func exitReason(out []byte) string {
	var rs []string
	for l := range strings.Lines(string(out)) {
		if r, ok := strings.CutPrefix(strings.TrimSpace(l), "ocf-exit-reason:"); ok {
			rs = append(rs, r)
		}
	}
	return strings.Join(rs, "; ")
}

func (a *ocfAgent) Start(ctx context.Context) error {
	res, err := a.call(ctx, "start", 0)
	if err != nil {
		return fmt.Errorf("ocf %s (%s:%s): start: %w", a.name, a.provider, a.typ, err)
	}
	if res.code != ocfSuccess {
		return a.exitError("start", res)
	}
	a.started.Store(true)
	return nil
}

func (a *ocfAgent) Stop(ctx context.Context) error {
	res, err := a.call(ctx, "stop", 0)
	if err != nil {
		return fmt.Errorf("ocf %s (%s:%s): stop: %w", a.name, a.provider, a.typ, err)
	}
	// 7 is not what the API asks of stop, but "not running" is stopped.
	if res.code != ocfSuccess && res.code != ocfNotRunning {
		return a.exitError("stop", res)
	}
	a.started.Store(false)
	return nil
}

func (a *ocfAgent) Monitor(ctx context.Context) error {
	var interval time.Duration
	if a.started.Load() {
		interval = ocfRecurringInterval
	}
	res, err := a.call(ctx, "monitor", interval)
	if err != nil {
		return fmt.Errorf("ocf %s (%s:%s): monitor: %w", a.name, a.provider, a.typ, err)
	}
	switch res.code {
	case ocfSuccess:
		return nil
	case ocfRunningPromoted, ocfDegraded, ocfDegradedPromoted:
		a.log.Warn("OCF monitor: running, but not plainly", "code", res.code, "meaning", ocfMeaning(res.code))
		return nil
	case ocfNotRunning:
		return fmt.Errorf("ocf %s: %w", a.name, resources.ErrNotRunning)
	case ocfErrInstalled:
		if interval == 0 {
			return fmt.Errorf("ocf %s: probe: %s: %w", a.name, ocfMeaning(res.code), resources.ErrNotRunning)
		}
	}
	return a.exitError("monitor", res)
}
