package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hamirror/hamirror/testenv/bench"
)

// The "nbd" section: fio through its nbd engine over unix sockets against
// hamirror (two file legs), nbdkit's file plugin (one file: the single-leg
// ceiling) and qemu-storage-daemon's quorum driver over two files (the
// nearest mirroring peer). Files live on /dev/shm so the figures measure the
// servers, not the disk. Servers alternate run by run; medians are printed.
//
// Environment: HAMIRROR_BENCH_RUNS (default 3), HAMIRROR_BENCH_RUNTIME
// (seconds per fio run, default 10), HAMIRROR_BENCH_WORKLOADS (e.g.
// "randread,randwrite"; seqwrite also fills the files, so it is kept first
// when chosen), HAMIRROR_BENCH_PPROF (a directory: mirrord writes a CPU
// profile there).

type nbdWorkload struct {
	name, title, rw, bs string
	qd                  int
	target              string
}

var nbdWorkloads = []nbdWorkload{
	{"seqwrite", "NBD, 1 MiB sequential write QD4", "write", "1m", 4, "target >= 0.7x nbdkit"},
	{"randwrite", "NBD, 4 KiB random write QD16", "randwrite", "4k", 16, "target >= 0.8x nbdkit and >= 4x quorum"},
	{"randread", "NBD, 4 KiB random read QD16", "randread", "4k", 16, "target >= 1.0x nbdkit"},
}

// nbdSubject is one server under test.
type nbdSubject struct {
	name string
	sock string
	pid  int
	stop func()
}

// cpuTicks is a process's user+system CPU time in clock ticks (1/100 s).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return u + st, nil
}

const benchDataSize = 256 << 20 // the region fio works on

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchNBD() error {
	for _, tool := range []string{"fio", "nbdkit", "qemu-storage-daemon", "nbdinfo"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed: run make deps", tool)
		}
	}
	runs := envInt("HAMIRROR_BENCH_RUNS", 3)
	runtime := envInt("HAMIRROR_BENCH_RUNTIME", 10)
	dir, err := os.MkdirTemp("/dev/shm", "hamirror-bench-")
	if err != nil {
		return fmt.Errorf("tmpfs work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	bin, err := benchBinaries(dir)
	if err != nil {
		return err
	}

	var subjects []*nbdSubject
	defer func() {
		for _, s := range subjects {
			s.stop()
		}
	}()
	for _, start := range []func(string, string) (*nbdSubject, error){startHamirror, startNbdkit, startQuorum} {
		s, err := start(dir, bin)
		if err != nil {
			return err
		}
		subjects = append(subjects, s)
	}
	fmt.Printf("fio ioengine=nbd, %d runs of %ds per subject and workload, alternating; files on %s\n", runs, runtime, dir)

	workloads := nbdWorkloads
	if want := os.Getenv("HAMIRROR_BENCH_WORKLOADS"); want != "" {
		workloads = nil
		for _, w := range nbdWorkloads {
			if strings.Contains(","+want+",", ","+w.name+",") {
				workloads = append(workloads, w)
			}
		}
	}
	results := map[string]map[string][]float64{}  // workload -> subject -> IOPS per run
	cpuPerIO := map[string]map[string][]float64{} // workload -> subject -> server CPU µs per I/O
	for run := range runs {
		for _, w := range workloads {
			if results[w.name] == nil {
				results[w.name] = map[string][]float64{}
				cpuPerIO[w.name] = map[string][]float64{}
			}
			for i := range subjects {
				s := subjects[(i+run)%len(subjects)] // rotate who goes first
				t0, _ := cpuTicks(s.pid)
				iops, ios, err := runFio(s.sock, w, runtime, dir)
				if err != nil {
					return fmt.Errorf("%s %s: %w", s.name, w.name, err)
				}
				t1, _ := cpuTicks(s.pid)
				cpu := 0.0
				if ios > 0 {
					cpu = float64(t1-t0) * 1e4 / ios // ticks of 10 ms -> µs per I/O
				}
				results[w.name][s.name] = append(results[w.name][s.name], iops)
				cpuPerIO[w.name][s.name] = append(cpuPerIO[w.name][s.name], cpu)
				fmt.Printf("  run %d %-10s %-9s %10.0f IOPS %8.1f µs server CPU per I/O\n", run+1, w.name, s.name, iops, cpu)
			}
		}
	}
	for _, w := range workloads {
		t := bench.Table{Title: w.title, Unit: "IOPS", Base: "nbdkit"}
		for _, s := range subjects {
			xs := results[w.name][s.name]
			note := "runs " + fmtRuns(xs)
			if s.name == "hamirror" {
				q := bench.Median(results[w.name]["quorum"])
				if q > 0 {
					note = fmt.Sprintf("%.2fx quorum; %s; %s", bench.Median(xs)/q, w.target, note)
				}
			}
			t.Add(s.name, bench.Median(xs), note)
		}
		t.Print(os.Stdout)
		// CPU per request is steadier than IOPS on a shared machine: it
		// shows what each server costs, whatever else the cores are doing.
		c := bench.Table{Title: w.title + ", server CPU per request", Unit: "µs/IO", Base: "nbdkit", LowerIsBetter: true}
		for _, s := range subjects {
			xs := cpuPerIO[w.name][s.name]
			c.Add(s.name, bench.Median(xs), "runs "+fmtRuns1(xs))
		}
		c.Print(os.Stdout)
	}
	return nil
}

func fmtRuns1(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, strconv.FormatFloat(x, 'f', 1, 64))
	}
	return strings.Join(parts, " ")
}

func fmtRuns(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, strconv.FormatFloat(x, 'f', 0, 64))
	}
	return strings.Join(parts, " ")
}

// benchBinaries finds mirrord and mirrorctl in bin/ (make bench builds
// them) or builds them into dir.
func benchBinaries(dir string) (string, error) {
	if _, err := os.Stat("bin/mirrord"); err == nil {
		if _, err := os.Stat("bin/mirrorctl"); err == nil {
			return "bin", nil
		}
	}
	out := filepath.Join(dir, "bin")
	cmd := exec.Command("go", "build", "-o", out+"/", "./cmd/mirrord", "./cmd/mirrorctl")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building mirrord and mirrorctl: %w", err)
	}
	return out, nil
}

func makeFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

// startDaemon starts cmd and waits until its NBD socket answers.
func startDaemon(name string, cmd *exec.Cmd, sock string) (*nbdSubject, error) {
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("%s exited at start (%v):\n%s", name, err, stderr.String())
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			if exec.Command("nbdinfo", "--size", "nbd+unix:///?socket="+sock).Run() == nil {
				return &nbdSubject{name: name, sock: sock, pid: cmd.Process.Pid, stop: stop}, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s did not start serving %s within 30s:\n%s", name, sock, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startHamirror(dir, bin string) (*nbdSubject, error) {
	legs := []string{filepath.Join(dir, "leg0"), filepath.Join(dir, "leg1")}
	for _, l := range legs {
		if err := makeFile(l, benchDataSize+64<<20); err != nil {
			return nil, err
		}
	}
	if out, err := exec.Command(filepath.Join(bin, "mirrorctl"), "create", legs[0], legs[1]).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mirrorctl create: %w\n%s", err, out)
	}
	sock := filepath.Join(dir, "hamirror.sock")
	args := []string{"volume", "--leg", legs[0], "--leg", legs[1], "--listen", "unix:" + sock,
		"--control", "unix:" + filepath.Join(dir, "mirrord.ctl")}
	if p := os.Getenv("HAMIRROR_BENCH_PPROF"); p != "" {
		args = append(args, "--cpuprofile", filepath.Join(p, "mirrord.cpu.pprof"))
	}
	return startDaemon("hamirror", exec.Command(filepath.Join(bin, "mirrord"), args...), sock)
}

func startNbdkit(dir, _ string) (*nbdSubject, error) {
	img := filepath.Join(dir, "nbdkit.img")
	if err := makeFile(img, benchDataSize); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "nbdkit.sock")
	return startDaemon("nbdkit", exec.Command("nbdkit", "--foreground", "--unix", sock, "file", img), sock)
}

func startQuorum(dir, _ string) (*nbdSubject, error) {
	q := []string{filepath.Join(dir, "quorum0.img"), filepath.Join(dir, "quorum1.img")}
	for _, f := range q {
		if err := makeFile(f, benchDataSize); err != nil {
			return nil, err
		}
	}
	sock := filepath.Join(dir, "quorum.sock")
	// A two-way mirror: writes go to both children, a write succeeds
	// when one does (vote-threshold 1), reads come from the first (fifo).
	return startDaemon("quorum", exec.Command("qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=f0,filename="+q[0],
		"--blockdev", "driver=file,node-name=f1,filename="+q[1],
		"--blockdev", `{"driver":"quorum","node-name":"q","vote-threshold":1,"read-pattern":"fifo","children":["f0","f1"]}`,
		"--nbd-server", "addr.type=unix,addr.path="+sock,
		"--export", "type=nbd,id=e0,node-name=q,name=,writable=on"), sock)
}

// runFio runs one fio job and returns its IOPS and the number of I/Os done
// while CPU was being counted (ramp time included).
func runFio(sock string, w nbdWorkload, runtime int, dir string) (iops, ios float64, err error) {
	cmd := exec.Command("fio", "--name="+w.name, "--ioengine=nbd", "--uri=nbd+unix:///?socket="+sock,
		"--rw="+w.rw, "--bs="+w.bs, "--iodepth="+strconv.Itoa(w.qd), "--size="+strconv.Itoa(benchDataSize),
		"--runtime="+strconv.Itoa(runtime), "--time_based", "--ramp_time=1", "--output-format=json")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, 0, fmt.Errorf("fio: %w\n%s%s", err, out, ee.Stderr)
		}
		return 0, 0, fmt.Errorf("fio: %w", err)
	}
	if i := bytes.IndexByte(out, '{'); i >= 0 {
		out = out[i:] // fio prints "connected to NBD server" first
	}
	var res struct {
		Jobs []struct {
			Error       int
			Read, Write struct {
				IOPS     float64
				TotalIOs float64 `json:"total_ios"`
			}
		}
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Jobs) == 0 {
		return 0, 0, fmt.Errorf("fio output: %v\n%s", err, out)
	}
	j := res.Jobs[0]
	if j.Error != 0 {
		return 0, 0, fmt.Errorf("fio job error %d", j.Error)
	}
	// total_ios excludes the ramp; add the ramp's share at the same rate.
	iops = j.Read.IOPS + j.Write.IOPS
	return iops, j.Read.TotalIOs + j.Write.TotalIOs + iops*1, nil
}
