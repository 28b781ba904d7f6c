// Command hamirror-demo shows the mirror volume alone, without the cluster
// (make demo-volume): two file legs in a temporary directory are mirrored by
// mirrord and served over NBD; the demo writes data with nbdcopy, fails a
// leg, keeps writing, re-adds it, resyncs, verifies, and stops mirrord with
// SIGTERM, showing `mirrorctl status` at each step and that both legs end up
// byte-identical to what was written.
//
//	make demo-volume                # uses bin/mirrord and bin/mirrorctl
//	go run ./testenv/cmd/hamirror-demo -keep   # keep the lab directory
package main

import (
	"bytes"
	"crypto/rand"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	legSize  = 256 << 20
	firstMiB = 96
	moreMiB  = 48
)

type demo struct {
	dir       string
	mirrord   string
	mirrorctl string
	legs      [2]string
	sock, ctl string
	daemon    *exec.Cmd
	log       *os.File
	exited    chan error
	step      int
}

func main() {
	keep := flag.Bool("keep", false, "keep the lab directory")
	flag.Parse()
	d, err := setup()
	if err != nil {
		fail(err)
	}
	if !*keep {
		defer os.RemoveAll(d.dir)
	}
	if err := d.run(); err != nil {
		if d.daemon != nil && d.daemon.ProcessState == nil {
			d.daemon.Process.Kill()
		}
		fmt.Fprintf(os.Stderr, "\nmirrord's log:\n")
		if b, e := os.ReadFile(d.log.Name()); e == nil {
			os.Stderr.Write(b)
		}
		if !*keep {
			os.RemoveAll(d.dir)
		}
		fail(err)
	}
	if *keep {
		fmt.Printf("\nlab kept in %s\n", d.dir)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "hamirror-demo:", err)
	os.Exit(1)
}

func setup() (*demo, error) {
	for _, tool := range []string{"nbdcopy", "qemu-img", "cmp"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed: run make deps", tool)
		}
	}
	dir, err := os.MkdirTemp("", "hamirror-demo-")
	if err != nil {
		return nil, err
	}
	d := &demo{dir: dir, sock: filepath.Join(dir, "nbd.sock"), ctl: filepath.Join(dir, "mirrord.sock")}
	d.mirrord, d.mirrorctl = filepath.Join("bin", "mirrord"), filepath.Join("bin", "mirrorctl")
	if _, err := os.Stat(d.mirrord); err != nil {
		fmt.Println("building mirrord and mirrorctl ...")
		out, err := exec.Command("go", "build", "-o", dir+"/", "./cmd/mirrord", "./cmd/mirrorctl").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("go build: %v\n%s", err, out)
		}
		d.mirrord, d.mirrorctl = filepath.Join(dir, "mirrord"), filepath.Join(dir, "mirrorctl")
	}
	for i := range d.legs {
		d.legs[i] = filepath.Join(dir, fmt.Sprintf("leg%d.img", i))
		if err := os.WriteFile(d.legs[i], nil, 0o600); err != nil {
			return nil, err
		}
		if err := os.Truncate(d.legs[i], legSize); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *demo) say(format string, args ...any) {
	d.step++
	bold, plain := "", ""
	if isTerminal(os.Stdout) {
		bold, plain = "\033[1m", "\033[0m"
	}
	fmt.Printf("\n%s== %d. %s%s\n", bold, d.step, fmt.Sprintf(format, args...), plain)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// sh runs a command with its output on the terminal, echoing it first.
func (d *demo) sh(allowFail bool, name string, args ...string) error {
	shown := filepath.Base(name)
	fmt.Printf("$ %s %s\n", shown, strings.Join(shorten(d.dir, args), " "))
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	err := cmd.Run()
	if err != nil && !allowFail {
		return fmt.Errorf("%s %s: %w", shown, strings.Join(args, " "), err)
	}
	return nil
}

// shorten replaces the lab directory by $LAB in echoed commands.
func shorten(dir string, args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, dir, "$LAB")
	}
	return out
}

func (d *demo) ctlArgs(args ...string) []string {
	return append([]string{"--control", "unix:" + d.ctl}, args...)
}

func (d *demo) status() error {
	// status exits 2 when the volume is not clean: that is information here.
	return d.sh(true, d.mirrorctl, d.ctlArgs("status")...)
}

func (d *demo) uri() string { return "nbd+unix:///?socket=" + d.sock }

func (d *demo) writeImage(name string, mib int) (string, error) {
	p := filepath.Join(d.dir, name)
	b := make([]byte, mib<<20)
	rand.Read(b)
	return p, os.WriteFile(p, b, 0o600)
}

func (d *demo) run() error {
	fmt.Printf("hamirror demo: a mirrored volume on two file legs, served over NBD\nlab: %s (LAB)\n", d.dir)

	d.say("Create the mirror on two blank %d MiB files", legSize>>20)
	if err := d.sh(false, d.mirrorctl, "create", d.legs[0], d.legs[1]); err != nil {
		return err
	}

	d.say("Start mirrord: assemble the legs and serve the volume on a unix socket")
	if err := d.startDaemon(); err != nil {
		return err
	}
	if err := d.status(); err != nil {
		return err
	}

	d.say("Write %d MiB of random data through NBD with nbdcopy", firstMiB)
	img1, err := d.writeImage("data1.img", firstMiB)
	if err != nil {
		return err
	}
	if err := d.sh(false, "nbdcopy", img1, d.uri()); err != nil {
		return err
	}
	if err := d.status(); err != nil {
		return err
	}

	d.say("Leg 1 fails (an operator pulls it): the volume keeps serving from leg 0")
	if err := d.sh(false, d.mirrorctl, d.ctlArgs("leg", "fail", "1")...); err != nil {
		return err
	}

	d.say("Keep writing while degraded: %d MiB more over the start of the volume", moreMiB)
	img2, err := d.writeImage("data2.img", moreMiB)
	if err != nil {
		return err
	}
	if err := d.sh(false, "nbdcopy", img2, d.uri()); err != nil {
		return err
	}
	if err := d.status(); err != nil {
		return err
	}

	d.say("Re-add leg 1: only the chunks its bitmap marks (written recently) are copied, not the whole leg")
	if err := d.sh(false, d.mirrorctl, d.ctlArgs("leg", "add", "1")...); err != nil {
		return err
	}
	if err := d.sh(false, d.mirrorctl, d.ctlArgs("resync", "--wait")...); err != nil {
		return err
	}
	if err := d.status(); err != nil {
		return err
	}

	d.say("Verify online: compare both legs chunk by chunk")
	if err := d.sh(false, d.mirrorctl, d.ctlArgs("verify", "--wait")...); err != nil {
		return err
	}

	d.say("Read the volume back and compare with what was written (the rest of the volume reads as zeros)")
	expect := filepath.Join(d.dir, "expected.img")
	if err := expectedImage(expect, img1, img2); err != nil {
		return err
	}
	if err := d.sh(false, "qemu-img", "compare", "-f", "raw", "-F", "raw", expect, d.uri()); err != nil {
		return err
	}
	whole := filepath.Join(d.dir, "volume.img")
	if err := d.sh(false, "nbdcopy", d.uri(), whole); err != nil {
		return err
	}

	d.say("Stop mirrord with SIGTERM: drain, flush both legs, mark clean")
	if err := d.stopDaemon(); err != nil {
		return err
	}
	if b, err := os.ReadFile(d.log.Name()); err == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for _, l := range lines[max(0, len(lines)-2):] {
			fmt.Println("  mirrord:", l)
		}
	}

	d.say("Each leg file holds the exact volume image at offset 0")
	fi, err := os.Stat(whole)
	if err != nil {
		return err
	}
	for _, leg := range d.legs {
		if err := d.sh(false, "cmp", "-n", fmt.Sprint(fi.Size()), whole, leg); err != nil {
			return err
		}
		fmt.Printf("  %s: identical to the volume (%d bytes)\n", filepath.Base(leg), fi.Size())
	}
	if err := d.sh(false, d.mirrorctl, "examine", d.legs[1]); err != nil {
		return err
	}
	fmt.Println("\ndemo complete: no acknowledged write was lost, both legs are identical")
	return nil
}

// expectedImage is img2 over img1 (what the two nbdcopy runs left).
func expectedImage(path, img1, img2 string) error {
	a, err := os.ReadFile(img1)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(img2)
	if err != nil {
		return err
	}
	copy(a, b)
	return os.WriteFile(path, a, 0o600)
}

func (d *demo) startDaemon() error {
	args := []string{"volume", "--leg", d.legs[0], "--leg", d.legs[1], "--listen", "unix:" + d.sock,
		"--control", "unix:" + d.ctl, "--resync-max-rate", "32M", "--resync-min-rate", "32M"}
	fmt.Printf("$ mirrord %s &\n", strings.Join(shorten(d.dir, args), " "))
	log, err := os.Create(filepath.Join(d.dir, "mirrord.log"))
	if err != nil {
		return err
	}
	d.log = log
	d.daemon = exec.Command(d.mirrord, args...)
	d.daemon.Stdout, d.daemon.Stderr = log, log
	if err := d.daemon.Start(); err != nil {
		return err
	}
	d.exited = make(chan error, 1)
	go func() { d.exited <- d.daemon.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-d.exited:
			return fmt.Errorf("mirrord exited at start: %v", err)
		default:
		}
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mirrord did not start serving within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *demo) stopDaemon() error {
	fmt.Println("$ kill -TERM $(pidof mirrord)")
	d.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			return fmt.Errorf("mirrord exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		return fmt.Errorf("mirrord did not stop within 30s")
	}
	b, _ := os.ReadFile(d.log.Name())
	if !bytes.Contains(b, []byte("volume closed clean")) {
		return fmt.Errorf("mirrord did not report a clean close")
	}
	return nil
}
