package agents

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

// privateMountEnv marks a test binary already running in its own mount
// namespace.
const privateMountEnv = "HAMIRROR_AGENTS_PRIVATE_MOUNTS"

// TestMain runs the tests (as root) in a private mount namespace: the
// file systems they mount are then invisible to other programs on the
// machine, whose `ip netns exec` or `unshare -m` would otherwise copy
// them into namespaces of their own and keep them busy (which Stop
// rightly reports). unshare execs the test binary in place.
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(privateMountEnv) == "" {
		if unshare, err := exec.LookPath("unshare"); err == nil {
			cmd := exec.Command(unshare, append([]string{"--mount", "--propagation", "private", os.Args[0]}, os.Args[1:]...)...)
			cmd.Env = append(os.Environ(), privateMountEnv+"=1")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			err := cmd.Run()
			var ee *exec.ExitError
			switch {
			case err == nil:
				os.Exit(0)
			case errors.As(err, &ee) && ee.ExitCode() >= 0:
				os.Exit(ee.ExitCode())
			}
			os.Stderr.WriteString("agents tests: cannot run in a private mount namespace (" + err.Error() + "); running in the host's\n")
		}
	}
	os.Exit(m.Run())
}
