// Command hamirror-hademo is `make demo`: hamirror's HA pair on the
// network-namespace failover lab, a node killed under a client's writes,
// an array lost and resynced, then everything torn down (testenv/hademo
// tells the story).
//
//	make demo                                  # builds bin/ and runs it as root
//	bin/hamirror-hademo --bin bin [--keep] [-v]
//	bin/hamirror-hademo --check                # exit 1 naming what is missing
//
// Ctrl-C (or SIGTERM) stops the story and tears the lab down; a second one
// exits at once and leaves the lab to the next run's sweep.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hamirror/hamirror/testenv/hademo"
)

func main() {
	bin := flag.String("bin", "bin", "folder holding mirrord and mirrorctl")
	keep := flag.Bool("keep", false, "keep the lab's folder (the nodes' logs, the cluster file)")
	verbose := flag.Bool("v", false, "print the lab's own progress lines too")
	check := flag.Bool("check", false, "only check that the demo can run here (root, the packages of make deps)")
	flag.Parse()
	if err := hademo.Available(); err != nil {
		fmt.Fprintln(os.Stderr, "hamirror-hademo:", err)
		os.Exit(1)
	}
	if *check {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		// The next signal is the default one: it ends the program at once.
		stop()
		fmt.Fprintln(os.Stderr, "\nhamirror-hademo: stopping and tearing the lab down (a second Ctrl-C exits at once and leaves it to the next run's sweep)")
	}()
	opt := hademo.Options{Bin: *bin, Out: os.Stdout, TTY: isTerminal(os.Stdout), Keep: *keep}
	if *verbose {
		opt.Logf = func(f string, a ...any) { fmt.Printf("   lab: "+f+"\n", a...) }
	}
	if _, err := hademo.Run(ctx, opt); err != nil {
		fmt.Fprintln(os.Stderr, "hamirror-hademo:", err)
		if ctx.Err() != nil {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
