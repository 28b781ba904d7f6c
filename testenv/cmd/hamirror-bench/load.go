package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// loadEnv, set in the environment of this very program, makes it the
// soak's load generator instead of the benchmark (see runLoad).
const loadEnv = "HAMIRROR_BENCH_LOAD_DIR"

// The I/O load: each writer rewrites a file of loadFileSize in chunks of
// its size, with an fsync after every chunk.
const loadFileSize = 256 << 20

var loadChunks = []int{4 << 10, 64 << 10, 1 << 20}

// loadProc is the load generator running as a child process.
type loadProc struct {
	cmd  *exec.Cmd
	out  *os.File
	path string
}

// startLoad runs this program again as the load generator under nice -n
// niceness (a child, so that every one of its threads is niced and the
// benchmark's own are not): one busy goroutine per core and one
// fsync-heavy writer per chunk size in loadChunks, on files in dir.
func startLoad(dir string, niceness int) (*loadProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "load.out")
	out, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("nice", "-n", strconv.Itoa(niceness), exe)
	cmd.Env = append(os.Environ(), loadEnv+"="+dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting the load generator: %w", err)
	}
	return &loadProc{cmd: cmd, out: out, path: path}, nil
}

// stop ends the load generator and returns its summary line.
func (p *loadProc) stop() string {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
	p.out.Close()
	b, _ := os.ReadFile(p.path)
	return string(b)
}

// runLoad is the load generator's main: it runs until SIGTERM, then
// prints what it did and removes its files.
func runLoad(dir string) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	var stop atomic.Bool
	var spins, fsyncs, bytes atomic.Int64
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := uint64(1)
			for !stop.Load() {
				for range 1 << 16 {
					x = x*6364136223846793005 + 1442695040888963407
				}
				spins.Add(1)
			}
			_ = x
		}()
	}
	errs := make(chan error, len(loadChunks))
	for i, chunk := range loadChunks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- writeLoad(filepath.Join(dir, fmt.Sprintf("load-%d", i)), chunk, &stop, &fsyncs, &bytes)
		}()
	}
	start := time.Now()
	var err error
	select {
	case <-sig:
	case err = <-errs:
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		err = errors.Join(err, e)
	}
	el := time.Since(start).Seconds()
	fmt.Printf("load: %d cores busy at %.0f spins/s; %d writers: %.0f fsyncs/s, %.1f MB/s written\n",
		runtime.NumCPU(), float64(spins.Load())/el, len(loadChunks), float64(fsyncs.Load())/el, float64(bytes.Load())/el/1e6)
	for i := range loadChunks {
		os.Remove(filepath.Join(dir, fmt.Sprintf("load-%d", i)))
	}
	return err
}

// writeLoad rewrites path in chunks of chunk bytes, fsyncing after each.
func writeLoad(path string, chunk int, stop *atomic.Bool, fsyncs, bytes *atomic.Int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, chunk)
	rand.Read(buf)
	var off int64
	for !stop.Load() {
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("load writer: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("load writer: %w", err)
		}
		fsyncs.Add(1)
		bytes.Add(int64(chunk))
		buf[0]++ // a different block each round
		if off += int64(chunk); off >= loadFileSize {
			off = 0
		}
	}
	return nil
}
