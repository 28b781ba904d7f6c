package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
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

	// Five alternating runs: the box is shared, so single runs swing by 10-20%.
	const runs = 5
	readDur := 4 * time.Second
	workloads := []struct {
		title, unit string
		qd, bs      int
		random      bool
		mb          bool
	}{
		{"iSCSI read, 4 KiB random, QD32", "IOPS", 32, 4096, true, false},
		{"iSCSI read, 1 MiB sequential, QD8", "MiB/s", 8, 1 << 20, false, true},
	}
	for _, w := range workloads {
		t := bench.Table{Title: w.title + " (tgtd LUN in /dev/shm)", Unit: w.unit, Base: "libiscsi iscsi-perf"}
		var ours, theirs []float64
		for range runs {
			iops, err := readLoad(d, w.qd, w.bs, w.random, readDur)
			if err != nil {
				return err
			}
			ours = append(ours, scale(iops, w.bs, w.mb))
			v, err := iscsiPerf(url, w.qd, w.bs/512, w.random, readDur)
			if err != nil {
				return err
			}
			theirs = append(theirs, scale(v, w.bs, w.mb))
		}
		t.Add("hamirror", bench.Median(ours), fmt.Sprintf("median of %d", runs))
		t.Add("libiscsi iscsi-perf", bench.Median(theirs), fmt.Sprintf("median of %d", runs))
		t.Print(os.Stdout)
	}

	writes := []struct {
		title, unit string
		qd, bs, n   int
		mb          bool
	}{
		{"iSCSI write, 4 KiB sequential, QD32", "IOPS", 32, 4096, 40000, false},
		{"iSCSI write, 1 MiB sequential, QD8", "MiB/s", 8, 1 << 20, 400, true},
	}
	for _, w := range writes {
		t := bench.Table{Title: w.title + " (tgtd LUN in /dev/shm)", Unit: w.unit, Base: "libiscsi qemu-img bench"}
		var ours, theirs []float64
		for range runs {
			start := time.Now()
			if err := seqWrite(d, w.bs, w.qd, w.n); err != nil {
				return err
			}
			ours = append(ours, scale(float64(w.n)/time.Since(start).Seconds(), w.bs, w.mb))
			secs, err := qemuBench(url, w.qd, w.bs, w.n)
			if err != nil {
				return err
			}
			theirs = append(theirs, scale(float64(w.n)/secs, w.bs, w.mb))
		}
		t.Add("hamirror", bench.Median(ours), fmt.Sprintf("median of %d", runs))
		t.Add("libiscsi qemu-img bench", bench.Median(theirs), fmt.Sprintf("median of %d", runs))
		t.Print(os.Stdout)
	}
	return nil
}

func scale(opsPerSec float64, bs int, mb bool) float64 {
	if mb {
		return opsPerSec * float64(bs) / (1 << 20)
	}
	return opsPerSec
}

// readLoad runs qd readers of bs bytes for dur and returns operations/s.
func readLoad(d *iscsi.Disk, qd, bs int, random bool, dur time.Duration) (float64, error) {
	blocks := d.Size() / int64(bs)
	var ops, next atomic.Int64
	var firstErr atomic.Value
	// A flag rather than a clock read per request keeps the driver's own
	// cost per request low (iscsi-perf's loop is C).
	var stop atomic.Bool
	timer := time.AfterFunc(dur, func() { stop.Store(true) })
	defer timer.Stop()
	var wg sync.WaitGroup
	for w := range qd {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			buf := make([]byte, bs)
			for !stop.Load() {
				var blk int64
				if random {
					blk = r.Int64N(blocks)
				} else {
					blk = next.Add(1) % blocks
				}
				if err := d.ReadAt(buf, blk*int64(bs)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				ops.Add(1)
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(ops.Load()) / time.Since(start).Seconds(), nil
}

// seqWrite writes n blocks of bs bytes sequentially from offset 0 with qd
// writers in flight.
func seqWrite(d *iscsi.Disk, bs, qd, n int) error {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	blocks := d.Size() / int64(bs)
	for range qd {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bs)
			for i := range buf {
				buf[i] = byte(i * 7)
			}
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := d.WriteAt(buf, (i%blocks)*int64(bs), false); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return err
	}
	return nil
}

var perfAverage = regexp.MustCompile(`iops average (\d+)`)

// iscsiPerf runs libiscsi's iscsi-perf for dur and returns its average IOPS.
func iscsiPerf(url string, qd, blocks int, random bool, dur time.Duration) (float64, error) {
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
		return 0, fmt.Errorf("iscsi-perf printed no average: %s", out)
	}
	return strconv.ParseFloat(string(m[len(m)-1][1]), 64)
}

var qemuCompleted = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

// qemuBench runs qemu-img bench (libiscsi driver) writing n requests of bs
// bytes with depth qd and returns the seconds it reports.
func qemuBench(url string, qd, bs, n int) (float64, error) {
	out, err := exec.Command("qemu-img", "bench", "-w", "-f", "raw", "-c", strconv.Itoa(n), "-d", strconv.Itoa(qd),
		"-s", strconv.Itoa(bs), url).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("qemu-img bench: %w: %s", err, out)
	}
	m := qemuCompleted.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("qemu-img bench printed no time: %s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
