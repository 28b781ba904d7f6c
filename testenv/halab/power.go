package halab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The power switch: a fence agent inside a node cannot reach the other
// node's processes (they are in another PID namespace), so it asks the lab,
// as a real agent asks a networked power switch. The agent (FenceAgent is
// one, in bash) writes a request file "req-ID" holding "ACTION NODE" into
// PowerDir; the lab carries it out and writes "req-ID.reply" holding
// "ok on", "ok off" or "error TEXT". Actions: status, on, off, reboot.
// off and reboot are a crash of the node (Node.Crash); reboot then boots
// its namespaces again, with no daemon (cluster services not enabled at
// boot); on boots it.

// PowerEvent is one request the power switch carried out.
type PowerEvent struct {
	Node, Action string
	Seen, Done   time.Time // when the request was found and when it was answered
	Err          error
}

type powerSwitch struct {
	lab   *Lab
	dir   string
	stopc chan struct{}
	wg    sync.WaitGroup

	mu     sync.Mutex
	events []PowerEvent
}

// PowerDir is the folder fence agents in the nodes write requests to.
func (l *Lab) PowerDir() string { return l.power.dir }

// PowerEvents returns the power switch's requests so far.
func (l *Lab) PowerEvents() []PowerEvent {
	l.power.mu.Lock()
	defer l.power.mu.Unlock()
	return append([]PowerEvent(nil), l.power.events...)
}

func startPowerSwitch(l *Lab) (*powerSwitch, error) {
	p := &powerSwitch{lab: l, dir: filepath.Join(l.Dir, "power"), stopc: make(chan struct{})}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, err
	}
	p.wg.Add(1)
	go p.loop()
	return p, nil
}

func (p *powerSwitch) stop() {
	close(p.stopc)
	p.wg.Wait()
}

// loop polls for requests every 5 ms (a request costs a fence agent that
// long at most; inotify would save little).
func (p *powerSwitch) loop() {
	defer p.wg.Done()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stopc:
			return
		case <-tick.C:
		}
		ents, _ := os.ReadDir(p.dir)
		for _, e := range ents {
			name := e.Name()
			if !strings.HasPrefix(name, "req-") || strings.HasSuffix(name, ".reply") {
				continue
			}
			if _, err := os.Stat(filepath.Join(p.dir, name+".reply")); err == nil {
				continue // answered; the agent removes both
			}
			p.serve(name)
		}
	}
}

func (p *powerSwitch) serve(name string) {
	ev := PowerEvent{Seen: time.Now()}
	b, err := os.ReadFile(filepath.Join(p.dir, name))
	reply := ""
	f := strings.Fields(string(b))
	if err != nil || len(f) != 2 {
		reply = fmt.Sprintf("error bad request %q: want ACTION NODE", strings.TrimSpace(string(b)))
	} else {
		ev.Action, ev.Node = f[0], f[1]
		reply, ev.Err = p.act(ev.Action, ev.Node)
	}
	ev.Done = time.Now()
	tmp := filepath.Join(p.dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(reply+"\n"), 0o644); err == nil {
		os.Rename(tmp, filepath.Join(p.dir, name+".reply"))
	}
	p.mu.Lock()
	p.events = append(p.events, ev)
	p.mu.Unlock()
	p.lab.opt.Logf("power switch: %s %s -> %s", ev.Action, ev.Node, reply)
}

func (p *powerSwitch) act(action, node string) (string, error) {
	n := p.lab.Node(node)
	if n == nil {
		return fmt.Sprintf("error no node %q", node), fmt.Errorf("no node %q", node)
	}
	state := func() string {
		if n.Up() {
			return "ok on"
		}
		return "ok off"
	}
	var err error
	switch action {
	case "status":
	case "off":
		err = n.Crash()
	case "on":
		err = n.Start(context.Background())
	case "reboot":
		if err = n.Crash(); err == nil {
			err = n.Start(context.Background())
		}
	default:
		return fmt.Sprintf("error unknown action %q", action), fmt.Errorf("unknown action %q", action)
	}
	if err != nil {
		return "error " + strings.ReplaceAll(err.Error(), "\n", " "), err
	}
	return state(), nil
}
