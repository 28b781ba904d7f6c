package heartbeat_test

import (
	"os"
	"testing"

	"github.com/hamirror/hamirror/testenv/hblab"
)

// TestMain lets the lab run a member in a child process of this test
// binary (hblab.StartProcess), so that a test can stop it with SIGSTOP.
func TestMain(m *testing.M) {
	if hblab.ChildMain() {
		return
	}
	os.Exit(m.Run())
}
