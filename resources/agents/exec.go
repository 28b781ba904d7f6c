package agents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hamirror/hamirror/resources"
)

// Exit codes of an exec resource's monitor command (the OCF convention).
const (
	execRunning    = 0
	execNotRunning = 7
)

// execAgent runs the operator's own start, stop and monitor commands.
//
//	type: exec
//	start: /usr/local/bin/app-start          # a string runs through /bin/sh -c
//	stop: [/usr/local/bin/appctl, stop]       # a list is an argv (absolute path, no shell)
//	monitor: "pidof -q appd || exit 7"       # 0 running, 7 not running, other: failed
//	env: ["APP_CONF=/srv/app/app.conf"]      # optional NAME=value list
//	user: app                                # optional; mirrord must be root
//
// Start runs the start command unless monitor already says running, then
// polls monitor until it does; Stop runs the stop command unless monitor
// already says not running, then polls until it does. So both are
// idempotent even when the commands are not. A command that outlives the
// timeout is killed with its whole process group. A daemon a start
// command leaves behind should not keep stdout and stderr open (redirect
// them): its output after the command exits is dropped.
type execAgent struct {
	name                 string
	start, stop, monitor []string
	env                  []string
	as                   *account
	log                  *slog.Logger
}

func newExec(name string, p *params, env Env) (resources.Agent, error) {
	a := &execAgent{name: name, log: env.Log}
	a.start = p.command("start", true)
	a.stop = p.command("stop", true)
	a.monitor = p.command("monitor", true)
	a.env = p.envList("env")
	a.as = runAs(p, "user", p.str("user", false, ""))
	if err := p.done(); err != nil {
		return nil, err
	}
	a.env = append(a.env, "HAMIRROR_RESOURCE="+name)
	return a, nil
}

func (a *execAgent) run(ctx context.Context, argv []string) (result, error) {
	return run(ctx, a.log, command{argv: argv, env: a.env, as: a.as})
}

// status runs the monitor command: nil when running, an error wrapping
// resources.ErrNotRunning for exit code 7, any other error otherwise.
func (a *execAgent) status(ctx context.Context) error {
	res, err := a.run(ctx, a.monitor)
	if err != nil {
		return fmt.Errorf("exec %s: monitor: %w", a.name, err)
	}
	switch res.code {
	case execRunning:
		return nil
	case execNotRunning:
		return fmt.Errorf("exec %s: monitor exited 7: %w", a.name, resources.ErrNotRunning)
	}
	return &ExitError{Resource: a.name, Action: "monitor", Code: res.code,
		Meaning: "failed: 0 means running, 7 not running, anything else failed", Reason: lastLines(res.output, 5)}
}

func (a *execAgent) Monitor(ctx context.Context) error { return a.status(ctx) }

func (a *execAgent) Start(ctx context.Context) error {
	if a.status(ctx) == nil {
		return nil
	}
	return a.act(ctx, "start", a.start, func(err error) bool { return err == nil },
		"the start command succeeded but monitor does not say running")
}

func (a *execAgent) Stop(ctx context.Context) error {
	if errors.Is(a.status(ctx), resources.ErrNotRunning) {
		return nil
	}
	return a.act(ctx, "stop", a.stop, func(err error) bool { return errors.Is(err, resources.ErrNotRunning) },
		"the stop command succeeded but monitor does not say stopped: fix the stop command or stop it by hand, then run mirrorctl cleanup")
}

// act runs a start or stop command, then polls monitor until reached
// says its answer is the one wanted.
func (a *execAgent) act(ctx context.Context, action string, argv []string, reached func(error) bool, notReached string) error {
	res, err := a.run(ctx, argv)
	if err != nil {
		return fmt.Errorf("exec %s: %s: %w", a.name, action, err)
	}
	if res.code != 0 {
		return &ExitError{Resource: a.name, Action: action, Code: res.code, Meaning: "failed", Reason: lastLines(res.output, 5)}
	}
	return pollUntil(ctx, func() (bool, error) {
		err := a.status(ctx)
		return reached(err), err
	}, func(last error) error {
		return fmt.Errorf("exec %s: %s (%w)", a.name, notReached, last)
	})
}

// pollUntil calls check every 100 ms, backing off to 1 s, until it says
// done or ctx ends; then it returns fail(the last check's error), which
// should say what to do.
func pollUntil(ctx context.Context, check func() (bool, error), fail func(last error) error) error {
	wait := 100 * time.Millisecond
	for {
		done, last := check()
		if done {
			return nil
		}
		if err := sleepCtx(ctx, wait); err != nil {
			if last == nil {
				last = err
			}
			return fail(fmt.Errorf("%w (gave up: %w)", last, err))
		}
		wait = min(2*wait, time.Second)
	}
}
