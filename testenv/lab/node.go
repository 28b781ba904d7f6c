package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/testenv/lab/agentproto"
)

// Disk is a virtio disk of a node, backed by a file on the host.
type Disk struct {
	Name string // also the disk's serial number inside the VM
	Size int64  // bytes; used when the backing file is created
	Path string // backing file; default DIR/NODE-NAME.img (created sparse)
}

// NodeConfig describes one VM.
type NodeConfig struct {
	Name     string // short (at most 6 characters): also the hostname
	Disks    []Disk // /dev/vda, /dev/vdb, ... in this order
	MemoryMB int    // default 512
	CPUs     int    // virtual CPUs (multi-threaded TCG); default 1
}

// Node is one running VM.
type Node struct {
	Name  string
	Index int
	cfg   NodeConfig
	dir   string

	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	agent    *agentClient
	BootTime time.Duration // from QEMU start to the agent's first answer

	stopOnce sync.Once
}

// Addr is the node's IPv4 address on net.
func (n *Node) Addr(net Net) string { return fmt.Sprintf("10.77.%d.%d", subnet(net), 10+n.Index) }

// MAC is the MAC address of the node's NIC on net.
func (n *Node) MAC(net Net) string {
	for i, x := range Nets {
		if x == net {
			return fmt.Sprintf("52:54:00:%02x:%02x:01", i+1, n.Index)
		}
	}
	return ""
}

// DiskPath returns the backing file of the disk called name.
func (n *Node) DiskPath(name string) string {
	for _, d := range n.cfg.Disks {
		if d.Name == name {
			return d.Path
		}
	}
	return ""
}

// ConsoleSocket is the unix socket of the VM's console (ttyS0, a root shell).
func (n *Node) ConsoleSocket() string { return filepath.Join(n.dir, n.Name+".console") }

// ConsoleLogPath is the file that records everything the console printed.
func (n *Node) ConsoleLogPath() string { return filepath.Join(n.dir, n.Name+".console.log") }

// ConsoleLog returns the console output so far.
func (n *Node) ConsoleLog() string {
	b, _ := os.ReadFile(n.ConsoleLogPath())
	return string(b)
}

func (n *Node) agentSocket() string   { return filepath.Join(n.dir, n.Name+".agent") }
func (n *Node) monitorSocket() string { return filepath.Join(n.dir, n.Name+".monitor") }

// qemuArgs returns QEMU's command line. serial is the chardev for ttyS1
// ("" for none).
func (n *Node) qemuArgs(img *Image, serial string) []string {
	mem := n.cfg.MemoryMB
	if mem == 0 {
		mem = 512
	}
	cpus := max(1, n.cfg.CPUs)
	// no_timer_check: under TCG on a busy host the kernel's check that the
	// IO-APIC timer ticks can time out and panic at boot ("IO-APIC + timer
	// doesn't work"); the emulated timer works, the check is just slow.
	cmdline := []string{"console=ttyS0,115200", "quiet", "panic=-1", "no_timer_check", "lab.name=" + n.Name}
	a := []string{"qemu-system-x86_64", "-accel", "tcg", "-m", fmt.Sprint(mem), "-smp", fmt.Sprint(cpus),
		"-display", "none", "-nodefaults", "-no-user-config", "-no-reboot",
		"-name", n.Name,
		"-kernel", img.Kernel.Vmlinuz, "-initrd", img.Initramfs,
		"-chardev", fmt.Sprintf("socket,id=con,path=%s,server=on,wait=off,logfile=%s", n.ConsoleSocket(), n.ConsoleLogPath()),
		"-serial", "chardev:con",
	}
	if serial != "" {
		a = append(a, "-chardev", "socket,id=ser1,"+serial, "-serial", "chardev:ser1")
	}
	a = append(a,
		"-monitor", fmt.Sprintf("unix:%s,server=on,wait=off", n.monitorSocket()),
		"-device", "virtio-serial-pci,id=vser",
		"-chardev", fmt.Sprintf("socket,id=agent,path=%s,server=on,wait=off", n.agentSocket()),
		"-device", "virtserialport,chardev=agent,name=lab.agent")
	for _, net := range Nets {
		id := "nic-" + string(net)
		a = append(a, "-netdev", fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", id, tapName(n.Name, net)),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s", id, n.MAC(net)))
		cmdline = append(cmdline, fmt.Sprintf("lab.nic=%s,%s,%s/24", n.MAC(net), net, n.Addr(net)))
	}
	for i, d := range n.cfg.Disks {
		a = append(a, "-drive", fmt.Sprintf("file=%s,if=none,id=d%d,format=raw,cache=writeback,aio=threads", d.Path, i),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=d%d,serial=%s", i, d.Name))
	}
	return append(a, "-append", strings.Join(cmdline, " "))
}

// start launches QEMU (inside ns) and returns once the process runs.
func (n *Node) start(ns *netns, img *Image, serial string) error {
	for i := range n.cfg.Disks {
		d := &n.cfg.Disks[i]
		if d.Path == "" {
			d.Path = filepath.Join(n.dir, n.Name+"-"+d.Name+".img")
		}
		if _, err := os.Stat(d.Path); os.IsNotExist(err) {
			f, err := os.Create(d.Path)
			if err != nil {
				return err
			}
			err = f.Truncate(d.Size)
			f.Close()
			if err != nil {
				return fmt.Errorf("disk %s: %w", d.Path, err)
			}
		}
	}
	argv := ns.command(n.qemuArgs(img, serial)...)
	n.cmd = exec.Command(argv[0], argv[1:]...)
	logf, err := os.Create(filepath.Join(n.dir, n.Name+".qemu.log"))
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "%s\n\n", strings.Join(argv, " "))
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	// QEMU dies with the test process, even when that is killed.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting QEMU for %s: %w", n.Name, err)
	}
	n.exited = make(chan struct{})
	go func() {
		n.exitErr = n.cmd.Wait()
		logf.Close()
		close(n.exited)
	}()
	return nil
}

// waitReady connects to the agent and waits for its first answer.
func (n *Node) waitReady(ctx context.Context, started time.Time) error {
	for {
		select {
		case <-n.exited:
			return fmt.Errorf("QEMU for %s exited during boot (%v); see %s and %s", n.Name, n.exitErr,
				filepath.Join(n.dir, n.Name+".qemu.log"), n.ConsoleLogPath())
		case <-ctx.Done():
			return fmt.Errorf("%s did not boot: %w; console:\n%s", n.Name, ctx.Err(), tail(n.ConsoleLog(), 40))
		default:
		}
		if n.agent == nil {
			if c, err := dialAgent(n.agentSocket()); err == nil {
				n.agent = c
			} else {
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := n.agent.ping(pctx, 300*time.Millisecond)
		cancel()
		if err == nil {
			n.BootTime = time.Since(started)
			return nil
		}
	}
}

// Exec runs argv in the VM and returns its result. An error means the
// command could not be sent or answered (the VM died, ctx ended); a
// command that ran and failed is a Result with a non-zero Exit.
func (n *Node) Exec(ctx context.Context, argv ...string) (Result, error) {
	if n.agent == nil {
		return Result{}, fmt.Errorf("%s: not booted", n.Name)
	}
	var timeout int64
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(1, time.Until(dl).Milliseconds())
	}
	res, err := n.agent.call(ctx, agentproto.TypeExec, func(id uint64) any {
		return agentproto.Exec{ID: id, Argv: argv, TimeoutMS: timeout}
	})
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", n.Name, err)
	}
	return Result{Exit: res.Exit, Stdout: string(res.Stdout), Stderr: string(res.Stderr), Error: res.Error}, nil
}

// Run runs a shell script (busybox sh -c) in the VM. Background commands
// must redirect their output (cmd >/run/x.log 2>&1 &), or Run returns
// only 2 s after the script ends.
func (n *Node) Run(ctx context.Context, script string) (Result, error) {
	return n.Exec(ctx, "sh", "-c", script)
}

// Put writes a file into the VM.
func (n *Node) Put(ctx context.Context, path string, data []byte, mode os.FileMode) error {
	res, err := n.agent.call(ctx, agentproto.TypePut, func(id uint64) any {
		return agentproto.Put{ID: id, Path: path, Mode: uint32(mode.Perm()), Data: data}
	})
	if err != nil {
		return fmt.Errorf("%s: put %s: %w", n.Name, path, err)
	}
	if res.Exit != 0 {
		return fmt.Errorf("%s: put %s: %s", n.Name, path, res.Error)
	}
	return nil
}

// Monitor sends one command to the QEMU human monitor (e.g. "set_link
// nic-priv1 off") and returns its answer.
func (n *Node) Monitor(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", n.monitorSocket(), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	readPrompt := func() (string, error) {
		var sb strings.Builder
		for !strings.HasSuffix(sb.String(), "(qemu) ") {
			b, err := r.ReadByte()
			if err != nil {
				return sb.String(), err
			}
			sb.WriteByte(b)
		}
		return sb.String(), nil
	}
	if _, err := readPrompt(); err != nil {
		return "", fmt.Errorf("monitor of %s: %w", n.Name, err)
	}
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		return "", err
	}
	out, err := readPrompt()
	out = strings.TrimSuffix(out, "(qemu) ")
	if i := strings.Index(out, "\n"); i >= 0 { // drop the echoed command
		out = out[i+1:]
	}
	return strings.TrimSpace(out), err
}

// SetLink brings the node's NIC on net up or down (carrier as the guest
// sees it), like pulling a cable.
func (n *Node) SetLink(net Net, up bool) error {
	state := "off"
	if up {
		state = "on"
	}
	out, err := n.Monitor(fmt.Sprintf("set_link nic-%s %s", net, state))
	if err == nil && out != "" {
		err = fmt.Errorf("set_link: %s", out)
	}
	return err
}

// Stop kills the VM (like pulling the power) and waits for QEMU to exit.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		if n.agent != nil {
			n.agent.close()
		}
		if n.cmd != nil && n.cmd.Process != nil {
			n.cmd.Process.Kill()
			<-n.exited
		}
	})
}

// Exited is closed when QEMU has exited.
func (n *Node) Exited() <-chan struct{} { return n.exited }

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
