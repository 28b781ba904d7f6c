// Command hamirror-lab boots the QEMU lab for a person (make lab): two
// nodes by default, each with four NICs (iscsi, public, priv1, priv2), two
// 256 MiB leg disks and ttyS1 linked to the other node's ttyS1. It prints
// how to reach each console, starts two iSCSI arrays (tgtd on the iSCSI
// network, -arrays 0 for none) and then reads commands on stdin:
//
//	n1 mirrorctl --help      run a command on node n1 (output + exit code)
//	client busybox ping -c1 10.77.1.10   run on the host side of the public net
//	quit                     (or Ctrl-D) stop every VM
//
// A console is a root shell (no login); attach from another terminal with
//
//	go run ./testenv/cmd/hamirror-lab console DIR/n1.console   # Ctrl-] leaves
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/testenv/lab"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "console" {
		if err := attach(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "hamirror-lab:", err)
			os.Exit(1)
		}
		return
	}
	nodes := flag.Int("nodes", 2, "number of node VMs")
	dir := flag.String("dir", "", "folder for disks, sockets and console logs (default: a new temp folder, kept)")
	legMB := flag.Int64("leg-mb", 256, "size of each leg disk in MiB")
	mem := flag.Int("mem", 512, "memory of each VM in MiB")
	arrays := flag.Int("arrays", 2, "iSCSI arrays (tgtd on the iSCSI network) to start, 0 for none")
	flag.Parse()
	if err := serve(*nodes, *dir, *legMB, *mem, *arrays); err != nil {
		fmt.Fprintln(os.Stderr, "hamirror-lab:", err)
		os.Exit(1)
	}
}

func serve(count int, dir string, legMB int64, mem, arrays int) error {
	if err := lab.Prerequisites(); err != nil {
		return err
	}
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "hamirror-lab-"); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var ncs []lab.NodeConfig
	for i := 1; i <= count; i++ {
		ncs = append(ncs, lab.NodeConfig{Name: fmt.Sprintf("n%d", i), MemoryMB: mem, Disks: []lab.Disk{
			{Name: "scratch", Size: 64 << 20}, {Name: "leg0", Size: legMB << 20}, {Name: "leg1", Size: legMB << 20}}})
	}
	start := time.Now()
	l, err := lab.Start(ctx, lab.Config{Dir: dir, Nodes: ncs, Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Printf("\nlab up in %v (kernel %s); files in %s\n\n", time.Since(start).Round(time.Millisecond), l.Image.Kernel.Release, dir)
	for _, n := range l.Nodes() {
		fmt.Printf("%s  iscsi %-11s public %-11s priv1 %-12s priv2 %-12s disks vda=scratch vdb=leg0 vdc=leg1\n",
			n.Name, n.Addr(lab.NetISCSI), n.Addr(lab.NetPublic), n.Addr(lab.NetPriv1), n.Addr(lab.NetPriv2))
		fmt.Printf("    console (root shell, no password): go run ./testenv/cmd/hamirror-lab console %s\n", n.ConsoleSocket())
		fmt.Printf("    console log: %s\n", n.ConsoleLogPath())
	}
	fmt.Printf("\nclient side of the public net (%s) and iSCSI net (%s): ip netns exec %s bash\n",
		lab.ClientAddr(lab.NetPublic), lab.ClientAddr(lab.NetISCSI), l.Netns())
	if len(l.Nodes()) > 1 {
		fmt.Println("serial line: ttyS1 of n1 <-> ttyS1 of n2")
	}
	if arrays > 0 {
		var names []string
		for i := 0; i < arrays; i++ {
			names = append(names, string(rune('a'+i)))
		}
		a, err := l.StartArrays(ctx, legMB<<20, names...)
		if err != nil {
			fmt.Println("iSCSI arrays not started:", err)
		} else {
			defer a.Stop()
			for _, name := range names {
				fmt.Printf("iSCSI array %s: %s\n", name, lab.ArrayURL(name))
			}
		}
	}
	fmt.Println("\ntype `NODE command...`, `client command...`, or quit (Ctrl-D)")
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		fmt.Print("lab> ")
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			fmt.Println()
			return nil
		case line, ok = <-lines:
		}
		if !ok || strings.TrimSpace(line) == "quit" {
			fmt.Println()
			return nil
		}
		who, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch {
		case who == "":
		case who == "client":
			out, err := l.Client(ctx, "sh", "-c", cmd)
			fmt.Print(out)
			if err != nil {
				fmt.Println("(failed)")
			}
		case l.Node(who) != nil:
			res, err := l.Node(who).Run(ctx, cmd)
			if err != nil {
				fmt.Println("error:", err)
				continue
			}
			fmt.Print(res.Stdout, res.Stderr)
			if res.Exit != 0 {
				fmt.Printf("(exit %d %s)\n", res.Exit, res.Error)
			}
		default:
			fmt.Printf("unknown node %q\n", who)
		}
	}
}

// attach connects the terminal to a console socket in raw mode until
// Ctrl-] is typed or the VM goes away.
func attach(sock string) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return fmt.Errorf("console %s: %w (is the lab running?)", sock, err)
	}
	defer c.Close()
	if err := stty("raw", "-echo"); err != nil {
		return fmt.Errorf("stty: %w", err)
	}
	defer stty("sane")
	fmt.Print("attached; Ctrl-] leaves\r\n")
	c.Write([]byte("\n"))
	done := make(chan error, 2)
	go func() { _, err := io.Copy(os.Stdout, c); done <- err }()
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := os.Stdin.Read(buf)
			if err != nil {
				done <- err
				return
			}
			if i := strings.IndexByte(string(buf[:n]), 0x1d); i >= 0 {
				c.Write(buf[:i])
				done <- nil
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				done <- err
				return
			}
		}
	}()
	err = <-done
	fmt.Print("\r\ndetached\r\n")
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func stty(args ...string) error {
	cmd := exec.Command("stty", args...)
	cmd.Stdin = os.Stdin
	return cmd.Run()
}
