package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labagent serve | uart send|recv DEV COUNT [TIMEOUT] | write FLAGS | iscsi probe|write|read URL ... | seqd -listen ADDR -file F")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(portName)
	case "uart":
		err = uartMain(os.Args[2:])
	case "write":
		err = writeMain(os.Args[2:])
	case "iscsi":
		err = iscsiMain(os.Args[2:])
	case "seqd":
		err = seqdMain(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "labagent:", err)
		os.Exit(1)
	}
}
