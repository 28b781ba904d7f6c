package hademo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/resources/node"
	"github.com/hamirror/hamirror/testenv/halab"
	"github.com/hamirror/hamirror/testenv/halab/hamirror"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// Options shape one run of the story.
type Options struct {
	// Bin is the folder holding mirrord and mirrorctl (made absolute).
	Bin string
	// Out receives the transcript (default os.Stdout).
	Out io.Writer
	// TTY draws progress on one self-overwriting line and steps in bold.
	TTY bool
	// Logf receives the lab's own progress lines (default: discard).
	Logf func(format string, args ...any)
	// Keep leaves the lab's folder (logs, cluster file) after the teardown.
	Keep bool
	// FillerRows is how many rows (about 540 bytes each) are written in
	// one transaction while an array is down, for the resync to copy
	// (default 40000, about 40 MiB with their WAL).
	FillerRows int
}

// Report is what a run showed.
type Report struct {
	Wall             time.Duration
	Prefix, Dir      string // the lab's namespace prefix and folder
	Victim, Survivor string // the killed node and the one that took over
	TakeoverDone     bool   // the survivor runs the group and the client was served again
	Outage           halab.Outage
	Phases           []halab.Phase
	Degraded         bool  // the volume ran on one leg while the array was dead
	ResyncBytes      int64 // what the resync had to copy when the array returned
	InSync           bool  // both legs in sync at the end
	Committed        int   // rows the client saw committed
	Lost             []int64
	Leftovers        []string // what teardown left on the host (nil: nothing)
}

// Available reports why the story cannot run here (nil: it can).
func Available() error {
	if err := hamirror.Available(); err != nil {
		return err
	}
	return iscsitarget.TgtdAvailable()
}

// story is one run's state.
type story struct {
	opt Options
	p   *printer
	rep *Report
	lab *halab.Lab
	sys *hamirror.System
	fp  *Footprint
	cl  *halab.Client
}

// vipAddr is PostgreSQL behind the virtual IP.
func vipAddr() string { return net.JoinHostPort(halab.VIP, strconv.Itoa(halab.PGPort)) }

// Run tells the story (see the package doc) and always tears the lab down,
// also when ctx is cancelled (Ctrl-C) or a step fails; the error names the
// step that failed and anything the teardown left behind.
func Run(ctx context.Context, opt Options) (*Report, error) {
	if opt.Out == nil {
		opt.Out = os.Stdout
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.FillerRows == 0 {
		opt.FillerRows = 40000
	}
	if opt.Bin != "" {
		abs, err := filepath.Abs(opt.Bin)
		if err != nil {
			return nil, err
		}
		opt.Bin = abs
	}
	for _, b := range []string{"mirrord", "mirrorctl"} {
		if _, err := os.Stat(filepath.Join(opt.Bin, b)); err != nil {
			return nil, fmt.Errorf("%s not found in %q: run make build", b, opt.Bin)
		}
	}
	if err := Available(); err != nil {
		return nil, fmt.Errorf("the demo cannot run here: %w", err)
	}
	start := time.Now()
	s := &story{opt: opt, p: &printer{w: opt.Out, tty: opt.TTY, start: start, lastQ: -1}, rep: &Report{}}
	defer func() {
		// A bug in a step must not leave the lab on the host either.
		if r := recover(); r != nil {
			s.teardown()
			panic(r)
		}
	}()
	err := s.tell(ctx)
	if err != nil {
		s.p.Say("")
		if ctx.Err() != nil {
			s.p.Say("interrupted: %v", err)
		} else {
			s.p.Say("FAILED: %v", err)
		}
		if s.lab != nil && ctx.Err() == nil {
			s.showLogs()
		}
	}
	if terr := s.teardown(); terr != nil {
		err = errors.Join(err, terr)
	}
	s.rep.Wall = time.Since(start)
	if err == nil {
		fmt.Fprintf(opt.Out, "\n%s\n", s.p.bold(fmt.Sprintf("demo complete in %s: the service moved with its data, no committed row was lost, nothing was left behind",
			s.rep.Wall.Round(100*time.Millisecond))))
	}
	return s.rep, err
}

// tell runs the story's steps in order, stopping at the first that fails.
func (s *story) tell(ctx context.Context) error {
	fmt.Fprintf(s.opt.Out, "%s\n", s.p.bold("hamirror: an HA storage pair, end to end"))
	fmt.Fprintln(s.opt.Out, "two nodes, two iSCSI arrays, PostgreSQL on the mirrored volume behind a virtual IP; all in network namespaces on this host")
	steps := []struct {
		title string
		run   func(context.Context) error
	}{
		{"Build the lab: two nodes, two tgtd arrays, private links, a serial line, a client", s.build},
		{"Start mirrord on both nodes", s.start},
		{"The client writes through the virtual IP " + halab.VIP, s.write},
		{"Power cut: the active node is killed", s.kill},
		{"The killed node reboots and rejoins as the standby", s.rejoin},
		{"An array dies: the volume runs degraded", s.arrayDies},
		{"The array returns: its leg is re-added and resynced", s.arrayReturns},
		{"No committed row was lost", s.checkRows},
		{"What the nodes say: mirrorctl status on both, mirrorctl log", s.show},
	}
	for _, st := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.p.Step("%s", st.title)
		if err := st.run(ctx); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", st.title, ctx.Err())
			}
			return fmt.Errorf("%s: %w", st.title, err)
		}
	}
	return nil
}

func (s *story) build(ctx context.Context) error {
	l, err := halab.New(ctx, halab.Options{Name: "demo", LUNSize: 192 << 20, Logf: s.opt.Logf, Keep: s.opt.Keep})
	if err != nil {
		return err
	}
	s.lab = l
	s.rep.Prefix, s.rep.Dir = strings.TrimSuffix(l.Netns("n1"), "-n1"), l.Dir
	s.fp = NewFootprint(s.rep.Prefix, l.Dir)
	s.fp.Record()
	s.p.Say("lab: namespaces %s-{n1,n2,client,san,sw}, folder %s", s.rep.Prefix, l.Dir)
	a := l.Arrays()
	s.p.Say("nodes n1 (%s) and n2 (%s) on the public network; client %s", l.Node("n1").Addr(), l.Node("n2").Addr(), halab.ClientAddr)
	s.p.Say("arrays: a at %s, b at %s (tgtd, one %d MiB LUN each)", a[0].Portal, a[1].Portal, 192)
	s.p.Say("heartbeat media: private links 10.21.0.0/24 and 10.22.0.0/24, a serial line, a slot on each array")
	s.sys = &hamirror.System{Bin: s.opt.Bin, Profile: hamirror.DefaultProfile(), Logf: s.opt.Logf}
	s.p.Say("mirrorctl create on both LUNs; ext4 and a PostgreSQL cluster on the new volume ...")
	if err := s.sys.Setup(ctx, l); err != nil {
		return err
	}
	s.p.Say("cluster file: %s (the product's default timing: keepalive 200ms, dead 2s)", s.sys.ConfigPath())
	return nil
}

func (s *story) start(ctx context.Context) error {
	if err := s.sys.Start(ctx); err != nil {
		return err
	}
	s.fp.Record()
	active, err := s.sys.Active(ctx)
	if err != nil {
		return err
	}
	pref := ""
	if active == "n1" {
		pref = " (the preferred node)"
	}
	s.p.Say("%s%s runs the group: fence -> volume -> fs -> vip -> db", active, pref)
	s.p.Say("%s is the standby, watching %s over every heartbeat medium", halab.Peer(active), active)
	return nil
}

func (s *story) write(ctx context.Context) error {
	s.cl = s.lab.StartClient(halab.ClientOptions{})
	s.p.Say("client %s: a fresh connection to %s and one committed INSERT each time, nonstop from here on", halab.ClientAddr, vipAddr())
	if err := s.cl.WaitCommits(ctx, 50, time.Now(), 30*time.Second); err != nil {
		return err
	}
	s.p.Say("%d rows committed so far", len(s.cl.Committed()))
	return nil
}

func (s *story) kill(ctx context.Context) error {
	victim, err := s.sys.Active(ctx)
	if err != nil {
		return err
	}
	survivor := halab.Peer(victim)
	s.rep.Victim, s.rep.Survivor = victim, survivor
	s.p.Say("%s: every cable pulled, every process SIGKILLed at once (mirrord, nbdfuse, PostgreSQL)", victim)
	fault := time.Now()
	if err := s.sys.Kill(ctx, victim); err != nil {
		return err
	}
	s.p.Say("waiting for the client to commit again through %s ...", halab.VIP)
	o, err := s.cl.WaitOutage(ctx, fault, time.Now(), 90*time.Second)
	if err != nil {
		return fmt.Errorf("the client was not served again: %w", err)
	}
	s.rep.Outage = o
	// PostgreSQL answers a moment before the survivor marks its start done.
	err = s.sys.Wait(ctx, 30*time.Second, func() error {
		if a, err := s.sys.Active(ctx); err != nil || a != survivor {
			return fmt.Errorf("the group runs on %q (%v), want %s", a, err, survivor)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("after the kill: %w", err)
	}
	s.rep.TakeoverDone = true
	s.fp.Record()
	// The survivor logs the database's start a moment after PostgreSQL
	// answers: wait for the last step.
	var phases []halab.Phase
	s.sys.Wait(ctx, 10*time.Second, func() error {
		if phases, err = s.sys.Breakdown(ctx, fault, survivor); err != nil {
			return err
		}
		if len(phases) < 6 {
			return fmt.Errorf("%d of 6 steps in %s's log", len(phases), survivor)
		}
		return nil
	})
	s.rep.Phases = phases
	for _, line := range breakdown(o, phases, victim, survivor) {
		s.p.Say("%s", line)
	}
	return s.lostSoFar(ctx)
}

// lostSoFar looks up every row committed so far through the VIP.
func (s *story) lostSoFar(ctx context.Context) error {
	ids := s.cl.Committed()
	lost, err := s.lab.Missing(ctx, vipAddr(), ids)
	if err != nil {
		return fmt.Errorf("reading the ledger back: %w", err)
	}
	if len(lost) > 0 {
		s.rep.Lost = lost
		return fmt.Errorf("%d of %d committed rows missing: %v", len(lost), len(ids), lost)
	}
	s.p.Say("all %d rows committed so far are there", len(ids))
	return nil
}

func (s *story) rejoin(ctx context.Context) error {
	victim := s.rep.Victim
	s.p.Say("%s boots, mirrord starts, finds %s running the group and stays the standby (no fail-back)", victim, s.rep.Survivor)
	if err := s.sys.Recover(ctx, victim); err != nil {
		return err
	}
	// The loop device of the volume the killed node had attached went
	// with the node (halab releases it, as its reboot would): the
	// teardown's Leftovers would list it otherwise.
	s.fp.Record()
	s.p.Say("%s: standby; %s: group running, volume in sync on both arrays", victim, s.rep.Survivor)
	return nil
}

// volume returns node id's volume status (nil when none runs there).
func (s *story) volume(id string) (*node.Status, error) {
	var st node.Status
	if err := s.sys.CallNode(id, "status", nil, &st); err != nil {
		return nil, err
	}
	if st.Volume == nil {
		return &st, fmt.Errorf("no volume runs on %s", id)
	}
	return &st, nil
}

func (s *story) arrayDies(ctx context.Context) error {
	active := s.rep.Survivor
	b := s.lab.Arrays()[1]
	s.p.Say("array b (%s): tgtd killed; connections reset, new ones refused", b.Portal)
	if err := b.Kill(); err != nil {
		return err
	}
	var leg string
	err := s.sys.Wait(ctx, time.Minute, func() error {
		st, err := s.volume(active)
		if err != nil {
			return err
		}
		v := st.Volume.Status
		if v.State != "degraded" || v.Legs[1].State != "failed" {
			return fmt.Errorf("volume %s, leg b %s", v.State, v.Legs[1].State)
		}
		leg = strings.ReplaceAll(v.Legs[1].Error, b.URL(), "array-b")
		return nil
	})
	if err != nil {
		return err
	}
	s.rep.Degraded = true
	s.p.Say("%s: volume degraded: %s", active, leg)
	standby := s.rep.Victim
	err = s.sys.Wait(ctx, 30*time.Second, func() error {
		st, err := s.sys.Status(standby)
		if err != nil {
			return err
		}
		if pv := st.PeerVolume; pv == nil || !pv.Trusted || pv.Knowledge.LegStates != [2]string{"in_sync", "failed"} {
			return fmt.Errorf("%s does not hold yet that leg b failed", standby)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.p.Say("every write now goes to array a alone; %s, the standby, holds that leg b failed (a takeover now would start on leg a alone)", standby)
	since := time.Now()
	if err := s.cl.WaitCommits(ctx, 20, since, 30*time.Second); err != nil {
		return fmt.Errorf("the client while degraded: %w", err)
	}
	s.p.Say("the client keeps committing: %d rows so far", len(s.cl.Committed()))
	s.p.Say("a bulk load while degraded: %d rows in one transaction, then CHECKPOINT ...", s.opt.FillerRows)
	q := fmt.Sprintf("CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 16) AS pad FROM generate_series(1, %d) g", s.opt.FillerRows)
	if _, err := s.query(ctx, q); err != nil {
		return err
	}
	if _, err := s.query(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	st, err := s.volume(active)
	if err != nil {
		return err
	}
	s.p.Say("array b's leg is now %s behind", mib(st.Volume.Status.Legs[1].OutOfSyncBytes))
	return nil
}

// query runs sql through the VIP with a long deadline (pgwire's own is
// 10 s per statement).
func (s *story) query(ctx context.Context, sql string) (string, error) {
	c, err := s.lab.DialClient(ctx, vipAddr(), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	return pgQuery(c, sql, time.Minute)
}

func (s *story) arrayReturns(ctx context.Context) error {
	active := s.rep.Survivor
	b := s.lab.Arrays()[1]
	s.p.Say("array b: tgtd restarted with its LUN; %s logs in again and re-adds the leg by itself", active)
	if err := b.Restart(); err != nil {
		return err
	}
	s.p.Say("waiting for %s to log in to array b again ...", active)
	s.p.ResetProgress()
	// Progress is what leg b lacked when it came back less what it lacks
	// now: a resync may run more than once (a write during the copy
	// dirties a chunk again), each with its own total.
	var behind int64
	err := s.sys.Wait(ctx, 2*time.Minute, func() error {
		st, err := s.volume(active)
		if err != nil {
			return err
		}
		v := st.Volume.Status
		oos := v.Legs[1].OutOfSyncBytes
		if v.Legs[1].State == "failed" {
			return fmt.Errorf("leg b still failed: %s", v.Legs[1].Error)
		}
		behind = max(behind, oos)
		if behind > 0 {
			s.p.Progress("resync", behind-oos, behind)
		}
		if v.Legs[0].State == "in_sync" && v.Legs[1].State == "in_sync" && !v.Resync.Running {
			return nil
		}
		return fmt.Errorf("volume %s, leg b %s, %s behind", v.State, v.Legs[1].State, mib(oos))
	})
	if err != nil {
		return err
	}
	total := behind
	s.rep.ResyncBytes, s.rep.InSync = total, true
	s.p.Say("both legs in sync: only what changed while array b was away was copied (%s of the %d MiB volume)", mib(total), 192)
	return nil
}

func (s *story) checkRows(ctx context.Context) error {
	s.cl.Stop()
	ids := s.cl.Committed()
	s.rep.Committed = len(ids)
	failed := len(s.cl.Attempts()) - len(ids)
	s.p.Say("the client stopped: %d rows committed (%d attempts failed during the outage)", len(ids), failed)
	lost, err := s.lab.Missing(ctx, vipAddr(), ids)
	if err != nil {
		return fmt.Errorf("reading the ledger back: %w", err)
	}
	s.rep.Lost = lost
	if len(lost) > 0 {
		return fmt.Errorf("%d of %d committed rows missing: %v", len(lost), len(ids), lost)
	}
	s.p.Say("SELECT through %s: all %d committed rows are there, 0 lost", halab.VIP, len(ids))
	return nil
}

func (s *story) show(ctx context.Context) error {
	for _, id := range []string{s.rep.Survivor, s.rep.Victim} {
		s.p.Say("$ mirrorctl status   # on %s", id)
		out, err := s.mirrorctl(ctx, id, "status")
		s.p.Raw(out)
		if err != nil {
			return err
		}
	}
	s.p.Say("$ mirrorctl log   # on %s", s.rep.Survivor)
	out, err := s.mirrorctl(ctx, s.rep.Survivor, "log")
	s.p.Raw(out)
	return err
}

// mirrorctl runs mirrorctl against node id's control socket and returns
// its output. status exits 2 when the volume is not clean: that is
// information here, not a failure.
func (s *story) mirrorctl(ctx context.Context, id string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.opt.Bin, "mirrorctl"), append([]string{"--control", s.sys.Socket(id)}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		err = nil
	}
	if err != nil {
		return string(out), fmt.Errorf("mirrorctl %s on %s: %w", strings.Join(args, " "), id, err)
	}
	return string(out), nil
}

// showLogs prints the end of each node's mirrord log, for a failed step.
func (s *story) showLogs() {
	for _, n := range s.lab.Nodes() {
		path := filepath.Join(n.Dir(), "log", "mirrord.log")
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		s.p.Say("the last lines of %s's mirrord log (%s):", n.ID, path)
		s.p.Raw(strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	if s.opt.Keep {
		s.p.Say("the lab's folder is kept: %s", s.lab.Dir)
	} else {
		s.p.Say("run with --keep to keep the lab's folder (every node's logs, the cluster file)")
	}
}

// teardown stops everything the story started, whatever step it reached,
// and checks that nothing of the lab is left on the host.
func (s *story) teardown() error {
	if s.lab == nil {
		return nil
	}
	s.p.Step("Tear down")
	if s.cl != nil {
		s.cl.Stop()
	}
	s.fp.Record()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	if s.sys != nil && s.sys.Lab != nil && (s.sys.Daemon("n1") != nil || s.sys.Daemon("n2") != nil) {
		s.p.Say("SIGTERM to mirrord on both nodes: the group stops in order (db, vip, fs, volume, fence)")
		if err := s.sys.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.lab.Close(); err != nil {
		errs = append(errs, err)
	} else {
		s.p.Say("nodes, tgtd arrays, serial line, networks and the lab's folder removed")
	}
	if s.opt.Keep {
		s.p.Say("lab folder kept: %s", s.lab.Dir)
		s.fp.Dir = ""
	}
	s.rep.Leftovers = s.fp.Leftovers()
	if len(s.rep.Leftovers) > 0 {
		errs = append(errs, fmt.Errorf("teardown left behind: %s", strings.Join(s.rep.Leftovers, "; ")))
		s.p.Say("LEFT BEHIND: %s", strings.Join(s.rep.Leftovers, "; "))
	} else {
		s.p.Say("nothing left: no namespace, mount, loop device, tgtd or PostgreSQL of the demo (%d namespaces checked)", s.fp.Namespaces())
	}
	s.p.Close()
	return errors.Join(errs...)
}
