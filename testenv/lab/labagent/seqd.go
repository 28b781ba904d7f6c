package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// seqdMain runs the failover story's application: a TCP service that
// appends each sequence number a client sends ("N\n") as a line to a file
// on the cluster's volume, fsyncs it, and only then answers "ok N\n". So
// every number a client saw acknowledged is on stable storage, and a
// takeover that loses one is caught. A failed append or fsync answers
// "err ..." and ends the service (a later fsync could succeed over pages
// the failed one dropped): a fenced node's writes end here, unacknowledged.
//
//	labagent seqd -listen :7000 -file /srv/data/seq -pidfile /run/seqd.pid
func seqdMain(args []string) error {
	fs := flag.NewFlagSet("seqd", flag.ContinueOnError)
	listen := fs.String("listen", ":7000", "TCP address to serve")
	path := fs.String("file", "", "file the numbers are appended to")
	pidfile := fs.String("pidfile", "", "write the pid here once serving")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("seqd: -file is required")
	}
	f, err := os.OpenFile(*path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *pidfile != "" {
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return err
		}
	}
	var mu sync.Mutex // one append+fsync at a time: acknowledged in file order
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for {
				c.SetDeadline(time.Now().Add(30 * time.Second))
				if !sc.Scan() {
					return
				}
				line := strings.TrimSpace(sc.Text())
				n, err := strconv.ParseUint(line, 10, 64)
				if err != nil {
					fmt.Fprintf(c, "err not a number: %q\n", line)
					return
				}
				mu.Lock()
				_, err = fmt.Fprintf(f, "%d\n", n)
				if err == nil {
					err = f.Sync()
				}
				if err != nil {
					fmt.Fprintf(c, "err %v\n", err)
					fmt.Fprintf(os.Stderr, "seqd: %d not stored: %v; exiting\n", n, err)
					os.Exit(1)
				}
				mu.Unlock()
				fmt.Fprintf(c, "ok %d\n", n)
			}
		}()
	}
}
