package hblab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/heartbeat"
)

// A member in a child process, so that a test can stop it with SIGSTOP as
// a paused VM or a stopped mirrord is stopped: every thread at once, while
// frames queue in its sockets, its pty and its peers' disk slots; on
// SIGCONT its runtime's timers and its sockets race, as they do in
// production. The child is the test binary itself: its TestMain calls
// ChildMain first, which runs the member when StartProcess started it.

// childEnv names the file that tells a child which member to run.
const childEnv = "HBLAB_CHILD_MEMBER"

// eventPrefix marks a child's stdout lines that carry an event (JSON).
const eventPrefix = "HBLAB-EVENT "

type childSpec struct {
	Config heartbeat.Config
	Key    []byte
	Netns  string
	Boot   uint64
}

// Process is one member running in a child process.
type Process struct {
	*eventLog
	ID    string
	lab   *Lab
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed once the child is reaped
	once  sync.Once
	err   error
}

// StartProcess runs node id in a child process: exe with args (a test
// binary: os.Args[0], "-test.run=^$"), whose TestMain calls ChildMain.
// The child opens the node's links in its namespace, as Start does.
func (l *Lab) StartProcess(id, exe string, args ...string) (*Process, error) {
	c := l.Config
	c.Self = heartbeat.NodeID(id)
	boot := uint64(time.Now().UnixNano())
	spec, err := json.Marshal(childSpec{Config: c, Key: l.Key, Netns: l.ns(id), Boot: boot})
	if err != nil {
		return nil, err
	}
	path := filepath.Join(l.dir, "child-"+id+".json")
	if err := os.WriteFile(path, spec, 0o600); err != nil {
		return nil, err
	}
	p := &Process{eventLog: newEventLog(id), ID: id, lab: l, done: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Env = append(os.Environ(), childEnv+"="+path)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = logWriter{l.opt.Logf, id + " (child)"}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("hblab: starting %s as a child process: %w", id, err)
	}
	l.mu.Lock()
	l.procs[id], l.boots[id] = p, boot
	l.mu.Unlock()
	if l.serial != nil {
		l.serial.setRunning(id == "n1", true)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			var e heartbeat.Event
			if js, ok := strings.CutPrefix(line, eventPrefix); ok && json.Unmarshal([]byte(js), &e) == nil {
				p.add(e)
				continue
			}
			l.opt.Logf("%s (child): %s", id, line)
		}
		p.err = p.cmd.Wait() // reaps the child: no zombie left behind
		close(p.done)
	}()
	return p, nil
}

// Signal sends sig to the child (SIGSTOP, SIGCONT).
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop ends the child (continued first if stopped) and reaps it; it is
// killed if it has not ended within 5s. Safe to call twice.
func (p *Process) Stop() error {
	p.once.Do(func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.stdin.Close() // the child ends when its stdin does
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
			p.err = fmt.Errorf("hblab: child %s did not end within 5s of its stdin closing: killed", p.ID)
		}
		l := p.lab
		l.mu.Lock()
		if l.procs[p.ID] == p {
			delete(l.procs, p.ID)
			if l.serial != nil {
				l.serial.setRunning(p.ID == "n1", false)
			}
		}
		l.mu.Unlock()
	})
	return p.err
}

// ChildMain runs a lab member if StartProcess started this process, until
// its stdin closes, and then returns true: the caller exits. It returns
// false at once in any other process. Call it first in TestMain.
func ChildMain() bool {
	path := os.Getenv(childEnv)
	if path == "" {
		return false
	}
	if err := runChild(path); err != nil {
		fmt.Fprintf(os.Stderr, "hblab child: %v\n", err)
		os.Exit(1)
	}
	return true
}

func runChild(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec childSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var links []heartbeat.Link
	if err := InNetns(spec.Netns, func() (err error) {
		links, err = heartbeat.OpenLinks(spec.Config)
		return err
	}); err != nil {
		return err
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	m, err := heartbeat.NewMember(spec.Config, spec.Key, links, heartbeat.MemberOptions{
		Boot: spec.Boot,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
		OnEvent: func(e heartbeat.Event) {
			js, _ := json.Marshal(e)
			mu.Lock()
			out.WriteString(eventPrefix + string(js) + "\n")
			out.Flush()
			mu.Unlock()
		},
	})
	if err != nil {
		for _, l := range links {
			l.Close()
		}
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := m.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// logWriter passes a child's stderr lines to the lab's log.
type logWriter struct {
	logf func(string, ...any)
	who  string
}

func (w logWriter) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.logf("%s: %s", w.who, line)
	}
	return len(b), nil
}
