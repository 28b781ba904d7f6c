package halab

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// childOf waits for the child of pid (unshare's forked PID 1).
func childOf(pid int) (int, error) {
	for range 200 {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			c, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if ppid(c) == pid {
				return c, nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("no child of pid %d", pid)
}

// ppid returns the parent of pid (0 if it is gone).
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// Pids returns the host PIDs of every process of the node (none when down).
func (n *Node) Pids() []int {
	n.mu.Lock()
	ns := n.pidNS
	up := n.init != nil
	n.mu.Unlock()
	if !up {
		return nil
	}
	return pidsIn(ns)
}

// pidsIn returns the host PIDs of every process in PID namespace ns.
func pidsIn(ns string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); err == nil && l == ns {
			pids = append(pids, p)
		}
	}
	return pids
}

// Freeze stops processes of the node with SIGSTOP: the given host PIDs, or
// every process of the node when none is given (a hung server: its
// kernel still answers on the network, nothing in user space runs).
func (n *Node) Freeze(pids ...int) error {
	return n.signalAll(syscall.SIGSTOP, pids)
}

// Thaw continues what Freeze stopped (every process of the node when no
// PID is given).
func (n *Node) Thaw(pids ...int) error {
	return n.signalAll(syscall.SIGCONT, pids)
}

// continueAll sends SIGCONT to pids and to their parents outside the
// node: nsenter, which started a command in the node and waits for it,
// stops itself when its child stops (and continues the child when
// continued itself).
func continueAll(pids []int) error {
	var errs []error
	for _, p := range pids {
		errs = append(errs, syscall.Kill(p, syscall.SIGCONT))
	}
	continueParents(pids)
	return errors.Join(errs...)
}

// continueParents continues the parents of pids that are not among them.
func continueParents(pids []int) {
	in := map[int]bool{}
	for _, p := range pids {
		in[p] = true
	}
	for _, p := range pids {
		if pp := ppid(p); pp > 1 && !in[pp] {
			syscall.Kill(pp, syscall.SIGCONT)
		}
	}
}

func (n *Node) signalAll(sig syscall.Signal, pids []int) error {
	if sig == syscall.SIGCONT && len(pids) == 0 {
		if !n.Up() {
			return fmt.Errorf("%s is down", n.ID)
		}
		pids = n.Pids()
	}
	if sig == syscall.SIGCONT {
		return continueAll(pids)
	}
	if len(pids) > 0 {
		var errs []error
		for _, p := range pids {
			errs = append(errs, syscall.Kill(p, sig))
		}
		return errors.Join(errs...)
	}
	if !n.Up() {
		return fmt.Errorf("%s is down", n.ID)
	}
	// Processes may fork while we go: repeat until a pass finds no new one.
	done := map[int]bool{}
	for range 10 {
		fresh := 0
		for _, p := range n.Pids() {
			if !done[p] {
				done[p] = true
				fresh++
				syscall.Kill(p, sig)
			}
		}
		if fresh == 0 {
			return nil
		}
	}
	return nil
}

// killTree kills pid's descendants, then pid.
func killTree(pid int) error {
	kids := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			kids[ppid(p)] = append(kids[ppid(p)], p)
		}
	}
	var walk func(int)
	walk = func(p int) {
		for _, c := range kids[p] {
			walk(c)
		}
		syscall.Kill(p, syscall.SIGKILL)
	}
	walk(pid)
	return nil
}
