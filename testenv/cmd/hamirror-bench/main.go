// Command hamirror-bench runs hamirror's benchmarks with the peers side by
// side and prints one table per workload with the ratios (make bench).
//
//	hamirror-bench            # every section
//	hamirror-bench nbd iscsi  # only these sections
//	hamirror-bench soak       # opt-in sections run only when named
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
	// optIn: only when named (a long campaign).
	optIn bool
}

// sections lists every benchmark section in the order they run.
var sections = []section{
	{"nbd", benchNBD, false},
	{"lab", benchLab, false},
	{"heartbeat", benchHeartbeat, false},
	{"engine", benchEngine, false},
	{"iscsi", benchISCSI, false},
	{"failover", benchFailover, false},
	{"soak", benchSoak, true},
}

func main() {
	if dir := os.Getenv(loadEnv); dir != "" {
		// The soak's load generator (load.go), started by the soak.
		if err := runLoad(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	want := os.Args[1:]
	failed := false
	for _, s := range sections {
		if len(want) > 0 && !slices.Contains(want, s.name) || len(want) == 0 && s.optIn {
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
