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
	"sync/atomic"
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var got atomic.Int32
	go func() {
		sig := <-sigs
		got.Store(int32(sig.(syscall.Signal)))
		// The next signal is the default one: it ends the program at once.
		signal.Reset(syscall.SIGINT, syscall.SIGTERM)
		fmt.Fprintf(os.Stderr, "\nhamirror-hademo: %v: stopping and tearing the lab down (a second signal exits at once and leaves it to the next run's sweep)\n", sig)
		cancel()
	}()
	opt := hademo.Options{Bin: *bin, Out: os.Stdout, TTY: isTerminal(os.Stdout), Keep: *keep}
	if *verbose {
		opt.Logf = func(f string, a ...any) { fmt.Printf("   lab: "+f+"\n", a...) }
	}
	if _, err := hademo.Run(ctx, opt); err != nil {
		fmt.Fprintln(os.Stderr, "hamirror-hademo:", err)
		if sig := got.Load(); sig != 0 {
			os.Exit(128 + int(sig)) // as a shell reports a program a signal ended
		}
		os.Exit(1)
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
