package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/testenv/lab/agentproto"
)

// portName is the virtio-serial port name the lab gives the agent channel.
const portName = "lab.agent"

const defaultTimeout = 10 * time.Minute

// findPort returns /dev/vportNpM for the virtio-serial port called name.
func findPort(name string) (string, error) {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, f := range names {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(f)), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q (is virtio_console loaded?)", name)
}

func serve(name string) error {
	var dev string
	var err error
	for i := 0; i < 100; i++ {
		if dev, err = findPort(name); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening agent port: %w", err)
	}
	var wmu sync.Mutex
	reply := func(typ byte, v any) {
		wmu.Lock()
		defer wmu.Unlock()
		if err := agentproto.NewWriter(f).Write(typ, v); err != nil {
			fmt.Fprintln(os.Stderr, "labagent: reply:", err)
		}
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		typ, p, err := agentproto.ReadFrame(r)
		if err != nil {
			// The host is not connected (EOF) or the stream lost sync:
			// start over on a fresh reader after a pause.
			if !errors.Is(err, os.ErrClosed) {
				time.Sleep(100 * time.Millisecond)
			}
			r.Reset(f)
			continue
		}
		switch typ {
		case agentproto.TypePing:
			var ping agentproto.Ping
			if agentproto.Decode(p, &ping) == nil {
				reply(agentproto.TypePong, ping)
			}
		case agentproto.TypeExec:
			var x agentproto.Exec
			if err := agentproto.Decode(p, &x); err != nil {
				reply(agentproto.TypeResult, agentproto.Result{Exit: -1, Error: err.Error()})
				continue
			}
			go func() { reply(agentproto.TypeResult, run(x)) }()
		case agentproto.TypePut:
			var put agentproto.Put
			if err := agentproto.Decode(p, &put); err != nil {
				reply(agentproto.TypeResult, agentproto.Result{Exit: -1, Error: err.Error()})
				continue
			}
			reply(agentproto.TypeResult, write(put))
		}
	}
}

func write(p agentproto.Put) agentproto.Result {
	res := agentproto.Result{ID: p.ID}
	if err := os.MkdirAll(filepath.Dir(p.Path), 0o755); err != nil {
		res.Exit, res.Error = -1, err.Error()
		return res
	}
	if err := os.WriteFile(p.Path, p.Data, os.FileMode(p.Mode&0o7777)); err != nil {
		res.Exit, res.Error = -1, err.Error()
		return res
	}
	if err := os.Chmod(p.Path, os.FileMode(p.Mode&0o7777)); err != nil {
		res.Exit, res.Error = -1, err.Error()
	}
	return res
}

func run(x agentproto.Exec) agentproto.Result {
	res := agentproto.Result{ID: x.ID}
	if len(x.Argv) == 0 {
		res.Exit, res.Error = -1, "empty argv"
		return res
	}
	timeout := defaultTimeout
	if x.TimeoutMS > 0 {
		timeout = time.Duration(x.TimeoutMS) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, x.Argv[0], x.Argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A command that leaves a background child holding its output open
	// still returns shortly after the command itself exits.
	cmd.WaitDelay = 2 * time.Second
	var out, errb limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if len(x.Stdin) > 0 {
		cmd.Stdin = strings.NewReader(string(x.Stdin))
	}
	err := cmd.Run()
	res.Stdout, res.Stderr = out.b, errb.b
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		res.Exit, res.Error = -1, fmt.Sprintf("killed after %v", timeout)
	case errors.As(err, &ee):
		res.Exit = ee.ExitCode()
	case errors.Is(err, exec.ErrWaitDelay):
		res.Exit = cmd.ProcessState.ExitCode()
	case err != nil:
		res.Exit, res.Error = -1, err.Error()
	}
	return res
}

// limitedBuffer keeps the first 4 MiB of a command's output so a reply
// always fits in one frame.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4<<20 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(len(p), room)]...)
	}
	return len(p), nil
}
