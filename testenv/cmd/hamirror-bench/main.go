// Command hamirror-bench runs hamirror's benchmarks with the peers side by
// side and prints one table per workload with the ratios (make bench).
//
//	hamirror-bench            # every section
//	hamirror-bench nbd iscsi  # only these sections
package main

import (
	"fmt"
	"os"
	"slices"
)

// section is one group of benchmarks; each lives in its own file.
type section struct {
	name string
	run  func() error
}

// sections lists every benchmark section in the order they run.
var sections = []section{
	{"nbd", benchNBD},
	{"lab", benchLab},
	{"heartbeat", benchHeartbeat},
	{"engine", benchEngine},
	{"iscsi", benchISCSI},
	{"failover", benchFailover},
}

func main() {
	want := os.Args[1:]
	failed := false
	for _, s := range sections {
		if len(want) > 0 && !slices.Contains(want, s.name) {
			continue
		}
		fmt.Printf("\n=== %s\n", s.name)
		if err := s.run(); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", s.name, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
