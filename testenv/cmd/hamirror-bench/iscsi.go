package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/testenv/bench"
	"github.com/hamirror/hamirror/testenv/iscsitarget"
)

// benchISCSI measures one hamirror iSCSI leg against libiscsi on the same
// tgtd LUN (backed by a file in /dev/shm so the array is not the limit):
// reads against iscsi-perf, writes against qemu-img bench's libiscsi driver.
func benchISCSI() error {
	if err := iscsitarget.TgtdAvailable(); err != nil {
		return err
	}
	for _, b := range []string{"iscsi-perf", "qemu-img"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not installed: run make deps", b)
		}
	}
	dir, err := os.MkdirTemp("/dev/shm", "hamirror-bench-iscsi-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const size = 512 << 20
	img := filepath.Join(dir, "lun.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	td, err := iscsitarget.StartTgtd(dir)
	if err != nil {
		return err
	}
	defer td.Stop()
	const iqn = "iqn.2026-01.org.hamirror.bench:lun"
	if err := td.AddTarget(1, iqn, []string{img}, ""); err != nil {
		return err
	}
	url := "iscsi://" + td.Portal + "/" + iqn + "/1"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := iscsi.OpenLeg(ctx, url, iscsi.Config{InitiatorName: "iqn.2026-01.org.hamirror.bench:hamirror"})
	if err != nil {
		return err
	}
	defer d.Close()
	// Fill the LUN once so reads are of real data.
	if err := seqWrite(d, 1<<20, 8, size/(1<<20)); err != nil {
		return err
	}

	// Alternating runs: the box is shared, so single runs swing by 10-20%.
	runs := envInt("HAMIRROR_BENCH_RUNS", 5)
	want := os.Getenv("HAMIRROR_BENCH_ISCSI_WORKLOADS")
	withSync := os.Getenv("HAMIRROR_BENCH_ISCSI_SYNC") != ""
	if p := os.Getenv("HAMIRROR_BENCH_PPROF"); p != "" {
		f, err := os.Create(filepath.Join(p, "iscsi.cpu.pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for _, w := range iscsiWorkloads {
		if want != "" && !strings.Contains(","+want+",", ","+w.name+",") {
			continue
		}
		base := "libiscsi iscsi-perf"
		if w.write {
			base = "libiscsi qemu-img bench"
		}
		t := bench.Table{Title: w.title + " (tgtd LUN in /dev/shm)", Unit: w.unit, Base: base}
		// The initiator's CPU per request: steadier than throughput on a
		// shared box, and what decides throughput when CPU is short.
		c := bench.Table{Title: w.title + ": initiator CPU per request", Unit: "µs", Base: base, LowerIsBetter: true}
		var ours, sync, theirs, oursCPU, syncCPU, theirsCPU []float64
		for range runs {
			v, cpu, err := w.ours(d, false)
			if err != nil {
				return err
			}
			ours, oursCPU = append(ours, v), append(oursCPU, cpu)
			if withSync {
				v, cpu, err := w.ours(d, true)
				if err != nil {
					return err
				}
				sync, syncCPU = append(sync, v), append(syncCPU, cpu)
			}
			if v, cpu, err = w.theirs(url); err != nil {
				return err
			}
			theirs, theirsCPU = append(theirs, v), append(theirsCPU, cpu)
		}
		note := fmt.Sprintf("median of %d, Start*At from callbacks", runs)
		t.Add("hamirror", bench.Median(ours), note)
		c.Add("hamirror", bench.Median(oursCPU), note)
		if withSync {
			note := fmt.Sprintf("median of %d, a goroutine per slot", runs)
			t.Add("hamirror ReadAt/WriteAt", bench.Median(sync), note)
			c.Add("hamirror ReadAt/WriteAt", bench.Median(syncCPU), note)
		}
		t.Add(base, bench.Median(theirs), fmt.Sprintf("median of %d", runs))
		c.Add(base, bench.Median(theirsCPU), fmt.Sprintf("median of %d, whole process incl. login", runs))
		t.Print(os.Stdout)
		c.Print(os.Stdout)
	}
	return nil
}

// selfCPU is the CPU time this process has used (hamirror's side of the
// benchmark runs in it; tgtd and libiscsi's tools are other processes).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// usPer is CPU microseconds per request.
func usPer(cpu time.Duration, requests float64) float64 {
	if requests <= 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / requests
}

// iscsiWorkload is one row of the iscsi section: ours runs hamirror's side
// (sync: blocking calls from a goroutine per slot instead of callbacks),
// theirs libiscsi's; both return the figure in unit and the initiator's
// CPU µs per request.
type iscsiWorkload struct {
	name, title, unit string
	write             bool
	ours              func(d *iscsi.Disk, sync bool) (float64, float64, error)
	theirs            func(url string) (float64, float64, error)
}

const iscsiReadDur = 4 * time.Second

func iscsiReadWorkload(name, title, unit string, qd, bs int, random, mb bool) iscsiWorkload {
	return iscsiWorkload{name: name, title: title, unit: unit,
		ours: func(d *iscsi.Disk, sync bool) (float64, float64, error) {
			load := readLoad
			if sync {
				load = readLoadSync
			}
			cpu0, start := selfCPU(), time.Now()
			v, err := load(d, qd, bs, random, iscsiReadDur)
			cpu := usPer(selfCPU()-cpu0, v*time.Since(start).Seconds())
			return scale(v, bs, mb), cpu, err
		},
		theirs: func(url string) (float64, float64, error) {
			v, cpu, err := iscsiPerf(url, qd, bs/512, random, iscsiReadDur)
			return scale(v, bs, mb), usPer(cpu, v*iscsiReadDur.Seconds()), err
		}}
}

func iscsiWriteWorkload(name, title, unit string, qd, bs, n int, mb bool) iscsiWorkload {
	return iscsiWorkload{name: name, title: title, unit: unit, write: true,
		ours: func(d *iscsi.Disk, sync bool) (float64, float64, error) {
			write := seqWrite
			if sync {
				write = seqWriteSync
			}
			cpu0, start := selfCPU(), time.Now()
			if err := write(d, bs, qd, n); err != nil {
				return 0, 0, err
			}
			secs := time.Since(start).Seconds()
			return scale(float64(n)/secs, bs, mb), usPer(selfCPU()-cpu0, float64(n)), nil
		},
		theirs: func(url string) (float64, float64, error) {
			secs, cpu, err := qemuBench(url, qd, bs, n)
			return scale(float64(n)/secs, bs, mb), usPer(cpu, float64(n)), err
		}}
}

// iscsiWorkloads can be chosen with HAMIRROR_BENCH_ISCSI_WORKLOADS (e.g.
// "read4k,write4k"); HAMIRROR_BENCH_ISCSI_SYNC=1 adds a row for the
// blocking ReadAt/WriteAt; HAMIRROR_BENCH_PPROF=DIR writes a CPU profile
// of the bench process (hamirror's side runs in it) to DIR/iscsi.cpu.pprof.
var iscsiWorkloads = []iscsiWorkload{
	iscsiReadWorkload("read4k", "iSCSI read, 4 KiB random, QD32", "IOPS", 32, 4096, true, false),
	iscsiReadWorkload("read1m", "iSCSI read, 1 MiB sequential, QD8", "MiB/s", 8, 1<<20, false, true),
	iscsiWriteWorkload("write4k", "iSCSI write, 4 KiB sequential, QD32", "IOPS", 32, 4096, 40000, false),
	iscsiWriteWorkload("write1m", "iSCSI write, 1 MiB sequential, QD8", "MiB/s", 8, 1<<20, 400, true),
}

func scale(opsPerSec float64, bs int, mb bool) float64 {
	if mb {
		return opsPerSec * float64(bs) / (1 << 20)
	}
	return opsPerSec
}

// readLoad keeps qd reads of bs bytes in flight for dur and returns
// operations/s. Like iscsi-perf's event loop it drives the Disk's
// asynchronous API: each completion callback starts the next read, so no
// goroutine is woken per request.
func readLoad(d *iscsi.Disk, qd, bs int, random bool, dur time.Duration) (float64, error) {
	blocks := d.Size() / int64(bs)
	var ops, next atomic.Int64
	// A flag rather than a clock read per request keeps the driver's own
	// cost per request low (iscsi-perf's loop is C).
	var stop atomic.Bool
	timer := time.AfterFunc(dur, func() { stop.Store(true) })
	defer timer.Stop()
	l := newLoop(qd)
	start := time.Now()
	for w := range qd {
		r := rand.New(rand.NewPCG(uint64(w), 7))
		buf := make([]byte, bs)
		var issue func()
		var done func(error)
		issue = func() {
			var blk int64
			if random {
				blk = r.Int64N(blocks)
			} else {
				blk = next.Add(1) % blocks
			}
			d.StartReadAt(buf, blk*int64(bs), done)
		}
		done = func(err error) {
			if err != nil {
				l.fail(err)
				return
			}
			ops.Add(1)
			if stop.Load() {
				l.slotDone()
				return
			}
			issue()
		}
		issue()
	}
	if err := l.wait(); err != nil {
		return 0, err
	}
	return float64(ops.Load()) / time.Since(start).Seconds(), nil
}

// seqWrite writes n blocks of bs bytes sequentially from offset 0 with qd
// writes in flight, driven from completion callbacks like readLoad.
func seqWrite(d *iscsi.Disk, bs, qd, n int) error {
	var next atomic.Int64
	blocks := d.Size() / int64(bs)
	l := newLoop(qd)
	for range qd {
		buf := make([]byte, bs)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		var issue func()
		var done func(error)
		issue = func() {
			i := next.Add(1) - 1
			if i >= int64(n) {
				l.slotDone()
				return
			}
			d.StartWriteAt(buf, (i%blocks)*int64(bs), false, done)
		}
		done = func(err error) {
			if err != nil {
				l.fail(err)
				return
			}
			issue()
		}
		issue()
	}
	return l.wait()
}

// readLoadSync is readLoad with qd goroutines calling the blocking ReadAt.
func readLoadSync(d *iscsi.Disk, qd, bs int, random bool, dur time.Duration) (float64, error) {
	blocks := d.Size() / int64(bs)
	var ops, next atomic.Int64
	var stop atomic.Bool
	timer := time.AfterFunc(dur, func() { stop.Store(true) })
	defer timer.Stop()
	l := newLoop(qd)
	start := time.Now()
	for w := range qd {
		go func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			buf := make([]byte, bs)
			for !stop.Load() {
				blk := next.Add(1) % blocks
				if random {
					blk = r.Int64N(blocks)
				}
				if err := d.ReadAt(buf, blk*int64(bs)); err != nil {
					l.fail(err)
					return
				}
				ops.Add(1)
			}
			l.slotDone()
		}()
	}
	if err := l.wait(); err != nil {
		return 0, err
	}
	return float64(ops.Load()) / time.Since(start).Seconds(), nil
}

// seqWriteSync is seqWrite with qd goroutines calling the blocking WriteAt.
func seqWriteSync(d *iscsi.Disk, bs, qd, n int) error {
	var next atomic.Int64
	blocks := d.Size() / int64(bs)
	l := newLoop(qd)
	for range qd {
		go func() {
			buf := make([]byte, bs)
			for i := range buf {
				buf[i] = byte(i * 7)
			}
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					l.slotDone()
					return
				}
				if err := d.WriteAt(buf, (i%blocks)*int64(bs), false); err != nil {
					l.fail(err)
					return
				}
			}
		}()
	}
	return l.wait()
}

// loop counts the slots of a callback-driven load still running.
type loop struct {
	left     atomic.Int64
	firstErr atomic.Value
	end      chan struct{}
}

func newLoop(slots int) *loop {
	l := &loop{end: make(chan struct{})}
	l.left.Store(int64(slots))
	return l
}

func (l *loop) slotDone() {
	if l.left.Add(-1) == 0 {
		close(l.end)
	}
}

func (l *loop) fail(err error) {
	l.firstErr.CompareAndSwap(nil, err)
	l.slotDone()
}

func (l *loop) wait() error {
	<-l.end
	if err, ok := l.firstErr.Load().(error); ok {
		return err
	}
	return nil
}

var perfAverage = regexp.MustCompile(`iops average (\d+)`)

// iscsiPerf runs libiscsi's iscsi-perf for dur and returns its average IOPS
// and the CPU time it used.
func iscsiPerf(url string, qd, blocks int, random bool, dur time.Duration) (float64, time.Duration, error) {
	args := []string{"-i", "iqn.2026-01.org.hamirror.bench:libiscsi", "-m", strconv.Itoa(qd), "-b", strconv.Itoa(blocks)}
	if random {
		args = append(args, "-r")
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	cmd := exec.CommandContext(ctx, "iscsi-perf", append(args, url)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	out, _ := cmd.CombinedOutput()
	m := perfAverage.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return 0, 0, fmt.Errorf("iscsi-perf printed no average: %s", out)
	}
	v, err := strconv.ParseFloat(string(m[len(m)-1][1]), 64)
	return v, processCPU(cmd), err
}

// processCPU is the CPU time an exited command used.
func processCPU(cmd *exec.Cmd) time.Duration {
	if cmd.ProcessState == nil {
		return 0
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

var qemuCompleted = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

// qemuBench runs qemu-img bench (libiscsi driver) writing n requests of bs
// bytes with depth qd and returns the seconds it reports and the CPU time
// it used.
func qemuBench(url string, qd, bs, n int) (float64, time.Duration, error) {
	cmd := exec.Command("qemu-img", "bench", "-w", "-f", "raw", "-c", strconv.Itoa(n), "-d", strconv.Itoa(qd),
		"-s", strconv.Itoa(bs), url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("qemu-img bench: %w: %s", err, out)
	}
	m := qemuCompleted.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("qemu-img bench printed no time: %s", out)
	}
	secs, err := strconv.ParseFloat(string(m[1]), 64)
	return secs, processCPU(cmd), err
}
