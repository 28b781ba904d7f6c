package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// seqd acknowledges a number only once it is in the file, in order, and
// answers anything else with an error instead of storing it.
func TestSeqdStoresBeforeItAcknowledges(t *testing.T) {
	dir := t.TempDir()
	file, pid := filepath.Join(dir, "seq"), filepath.Join(dir, "pid")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	go seqdMain([]string{"-listen", addr, "-file", file, "-pidfile", pid})
	var c net.Conn
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("seqd does not listen on %s: %v", addr, err)
		}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for _, n := range []int{3, 1, 2} {
		fmt.Fprintf(c, "%d\n", n)
		line, err := r.ReadString('\n')
		if err != nil || line != fmt.Sprintf("ok %d\n", n) {
			t.Fatalf("answer to %d: %q, %v", n, line, err)
		}
		b, _ := os.ReadFile(file)
		if !strings.HasSuffix(string(b), fmt.Sprintf("%d\n", n)) {
			t.Fatalf("%d acknowledged but the file holds %q", n, b)
		}
	}
	fmt.Fprintf(c, "seven\n")
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "err ") {
		t.Errorf("answer to a non-number: %q", line)
	}
	if b, _ := os.ReadFile(file); string(b) != "3\n1\n2\n" {
		t.Errorf("file holds %q", b)
	}
	if b, _ := os.ReadFile(pid); strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Errorf("pid file holds %q", b)
	}
}
