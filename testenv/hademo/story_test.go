package hademo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The story end to end with the real parts (namespaces, tgtd, mirrord on
// both nodes, nbdfuse and loop devices, ext4, PostgreSQL), checked by what
// it reports and by its transcript, and the teardown checked from the
// outside; then the command interrupted in the middle of the takeover.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds mirrord, mirrorctl and the demo command once, or fails
// t loudly when the demo cannot run here.
func binaries(t *testing.T) string {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatalf("the demo cannot run here: %v", err)
	}
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "hademo-bin-"); buildErr != nil {
			return
		}
		for _, pkg := range []string{"cmd/mirrord", "cmd/mirrorctl", "testenv/cmd/hamirror-hademo"} {
			out, err := exec.Command("go", "build", "-o", binDir+"/", "github.com/hamirror/hamirror/"+pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// theirProcesses lists processes whose command line names the lab's
// folder (mirrord --config DIR/..., postgres -D DIR/...): a check of the
// teardown that does not rely on the footprint's namespace inodes.
func theirProcesses(dir string) []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || e.Name() == "self" {
			continue
		}
		if cmd := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmd, dir) {
			left = append(left, e.Name()+": "+cmd)
		}
	}
	return left
}

// checkGone fails t if anything of the lab whose namespaces are prefix-*
// and whose folder is dir is still on the host.
func checkGone(t *testing.T, fp *Footprint) {
	t.Helper()
	if left := fp.Leftovers(); len(left) > 0 {
		t.Errorf("the teardown left behind: %s", strings.Join(left, "; "))
	}
	if left := theirProcesses(fp.Dir); len(left) > 0 {
		t.Errorf("processes of the lab still run: %s", strings.Join(left, "; "))
	}
	if fp.Namespaces() != 5 {
		t.Errorf("%d of the lab's 5 namespaces were recorded: the leftover check looked at too little", fp.Namespaces())
	}
}

func TestDemoStory(t *testing.T) {
	bin := binaries(t)
	// The test keeps its own footprint of the lab, recorded from outside
	// while both nodes are up, to check the teardown independently.
	var fp *Footprint
	w := &lineWriter{line: func(line string) {
		if m := labLine.FindStringSubmatch(line); m != nil {
			fp = NewFootprint(m[1], m[2])
		}
		if strings.HasPrefix(line, "== 3.") && fp != nil {
			fp.Record()
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{Bin: bin, Out: w, FillerRows: 20000})
	transcript := w.all.String()
	t.Logf("transcript:\n%s", transcript)
	if err != nil {
		t.Fatalf("the demo failed: %v", err)
	}

	// The takeover: the survivor runs the group, the client was served
	// again, and every step of the takeover is in the breakdown, in order.
	if !rep.TakeoverDone || rep.Victim == "" || rep.Survivor == rep.Victim {
		t.Errorf("no takeover: victim %q, survivor %q", rep.Victim, rep.Survivor)
	}
	var names []string
	for _, p := range rep.Phases {
		names = append(names, p.Name)
	}
	if want := "detect fence assemble mount VIP database ready"; strings.Join(names, " ") != want {
		t.Errorf("takeover steps %q, want %q", names, want)
	}
	if rep.Outage.Duration <= 0 || rep.Outage.Failures == 0 {
		t.Errorf("outage %+v: the client saw no gap after a node was killed", rep.Outage)
	}
	// No committed row lost; the array's return resynced what changed.
	if rep.Committed < 100 || len(rep.Lost) > 0 {
		t.Errorf("%d rows committed, lost %v", rep.Committed, rep.Lost)
	}
	if !rep.Degraded || !rep.InSync || rep.ResyncBytes <= 0 {
		t.Errorf("degraded %v, in sync %v, resynced %d bytes", rep.Degraded, rep.InSync, rep.ResyncBytes)
	}
	if rep.ResyncBytes >= 192<<20 {
		t.Errorf("the resync copied %d bytes: the whole leg, not what changed", rep.ResyncBytes)
	}
	if len(rep.Leftovers) > 0 {
		t.Errorf("leftovers: %v", rep.Leftovers)
	}

	// The transcript tells it.
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`client-visible outage: \d+\.\d\d s`),
		regexp.MustCompile(`takeover by ` + rep.Survivor + `, counted from the power cut of ` + rep.Victim),
		regexp.MustCompile(`(?m)^\s+detect .*\n\s+fence .*\n\s+assemble .*\n\s+mount .*\n\s+vip .*\n\s+(database .*\n\s+client|client .*\n\s+database) `),
		regexp.MustCompile(`volume degraded`),
		regexp.MustCompile(`resync \[#+\] 100\.0%`),
		regexp.MustCompile(`both legs in sync`),
		regexp.MustCompile(`all \d+ committed rows are there, 0 lost`),
		regexp.MustCompile(`\$ mirrorctl status   # on ` + rep.Survivor + `\n\s+cluster halab: this node ` + rep.Survivor + ` is active`),
		regexp.MustCompile(`\$ mirrorctl status   # on ` + rep.Victim + `\n\s+cluster halab: this node ` + rep.Victim + ` is standby`),
		regexp.MustCompile(`(?m)\$ mirrorctl log .*\n(\s+\d{4}-.*\n)*\s+.*role: standby -> active`),
		regexp.MustCompile(`nothing left: no namespace, mount, loop device, tgtd or PostgreSQL`),
		regexp.MustCompile(`demo complete in`),
	} {
		if !want.MatchString(transcript) {
			t.Errorf("the transcript lacks %q", want)
		}
	}
	if fp == nil || fp.Prefix != rep.Prefix || fp.Dir != rep.Dir {
		t.Fatalf("the transcript names lab %+v, the report %s %s", fp, rep.Prefix, rep.Dir)
	}
	checkGone(t, fp)
}

// labLine is where the transcript names the lab's namespaces and folder.
var labLine = regexp.MustCompile(`lab: namespaces (\S+)-\{n1,n2,client,san,sw\}, folder (\S+)`)

// lineWriter keeps what is written and calls line for each full line.
type lineWriter struct {
	all  bytes.Buffer
	part []byte
	line func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.all.Write(p)
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.line(string(w.part[:i]))
		w.part = w.part[i+1:]
	}
}

// TestDemoInterruptedTearsDown: a signal to the command in the middle of
// the story stops it and tears everything down: SIGINT (Ctrl-C) while the
// standby takes over from the killed node (a crashed node's loop device,
// a fresh mount on the other), SIGTERM while the returned array's leg is
// being re-added.
func TestDemoInterruptedTearsDown(t *testing.T) {
	for _, c := range []struct {
		sig syscall.Signal
		at  string
	}{
		{syscall.SIGINT, "waiting for the client to commit again"},
		{syscall.SIGTERM, "to log in to array b again"},
	} {
		t.Run(c.sig.String(), func(t *testing.T) { interrupt(t, c.sig, c.at) })
	}
}

// interrupt runs the command and sends it sig at the first line holding
// at.
func interrupt(t *testing.T, sig syscall.Signal, at string) {
	bin := binaries(t)
	cmd := exec.Command(filepath.Join(bin, "hamirror-hademo"), "--bin", bin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	defer cmd.Process.Kill()
	var transcript strings.Builder
	var fp *Footprint
	timeout := time.After(3 * time.Minute)
	interrupted := false
	for !interrupted {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the demo ended before %q:\n%s\n%s", at, transcript.String(), stderr.String())
			}
			transcript.WriteString(line + "\n")
			if m := labLine.FindStringSubmatch(line); m != nil {
				fp = NewFootprint(m[1], m[2])
			}
			if strings.HasPrefix(line, "== 3.") && fp != nil {
				fp.Record() // both nodes up, the volume attached on one
			}
			if strings.Contains(line, at) {
				if fp == nil {
					t.Fatalf("the demo did not name its lab:\n%s", transcript.String())
				}
				fp.Record()
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				interrupted = true
			}
		case <-timeout:
			t.Fatalf("%q never came:\n%s", at, transcript.String())
		}
	}
	rest, _ := io.ReadAll(chanReader(lines))
	transcript.Write(rest)
	var exitErr error
	select {
	case exitErr = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the demo did not exit within 3 minutes of %v:\n%s", sig, transcript.String())
	}
	t.Logf("transcript:\n%s\nstderr:\n%s", transcript.String(), stderr.String())
	var ee *exec.ExitError
	if !errors.As(exitErr, &ee) || ee.ExitCode() != 128+int(sig) {
		t.Errorf("exit: %v, want status %d (ended by %v)", exitErr, 128+int(sig), sig)
	}
	for _, want := range []string{"interrupted:", ". Tear down", "nothing left:"} {
		if !strings.Contains(transcript.String(), want) {
			t.Errorf("the transcript lacks %q", want)
		}
	}
	checkGone(t, fp)
}

// chanReader reads the remaining lines of ch.
func chanReader(ch <-chan string) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for l := range ch {
			io.WriteString(pw, l+"\n")
		}
		pw.Close()
	}()
	return pr
}
