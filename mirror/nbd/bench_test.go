package nbd

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// fileBackend serves one file with pread/pwrite: enough to measure the
// server's own cost (make bench measures the mirror behind it).
type fileBackend struct {
	f    *os.File
	size int64
}

func (b *fileBackend) Size() int64    { return b.size }
func (b *fileBackend) BlockSize() int { return 512 }
func (b *fileBackend) ReadAt(p []byte, off int64) error {
	_, err := b.f.ReadAt(p, off)
	return err
}
func (b *fileBackend) WriteAt(p []byte, off int64, fua bool) error {
	_, err := b.f.WriteAt(p, off)
	return err
}
func (b *fileBackend) Flush() error                        { return b.f.Sync() }
func (b *fileBackend) Zero(off, n int64, unmap bool) error { return nil }

// BenchmarkFio runs fio's nbd engine against the server over a tmpfs file
// (go test -bench Fio -benchtime 1x ./mirror/nbd, with -cpuprofile to
// profile the hot path). It reports IOPS, not ns/op.
func BenchmarkFio(b *testing.B) {
	if _, err := exec.LookPath("fio"); err != nil {
		b.Skip("fio not installed: run make deps")
	}
	dir, err := os.MkdirTemp("/dev/shm", "nbdbench")
	if err != nil {
		b.Skip("no /dev/shm")
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, "img"))
	if err != nil {
		b.Fatal(err)
	}
	const size = 256 << 20
	f.Truncate(size)
	defer f.Close()
	srv, err := NewServer(&fileBackend{f: f, size: size}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	ln, err := Listen("unix:" + sock)
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	for _, w := range []struct{ name, rw, bs, qd string }{
		{"randwrite4k", "randwrite", "4k", "16"},
		{"randread4k", "randread", "4k", "16"},
		{"write1m", "write", "1m", "4"},
	} {
		b.Run(w.name, func(b *testing.B) {
			for range b.N {
				cpu0 := selfCPU()
				out, err := exec.Command("fio", "--name=b", "--ioengine=nbd", "--uri=nbd+unix:///?socket="+sock,
					"--rw="+w.rw, "--bs="+w.bs, "--iodepth="+w.qd, "--size=256m", "--runtime=5", "--time_based",
					"--output-format=json").Output()
				if err != nil {
					b.Fatal(err)
				}
				var res struct {
					Jobs []struct {
						Read, Write struct{ IOPS float64 }
					}
				}
				if i := bytes.IndexByte(out, '{'); i >= 0 {
					out = out[i:] // fio prints "connected to NBD server" first
				}
				if err := json.Unmarshal(out, &res); err != nil || len(res.Jobs) == 0 {
					b.Fatalf("fio output: %v\n%s", err, out)
				}
				iops := res.Jobs[0].Read.IOPS + res.Jobs[0].Write.IOPS
				b.ReportMetric(iops, "IOPS")
				// The server's own CPU per request (fio runs in another
				// process): steadier than IOPS on a shared machine.
				b.ReportMetric(float64(selfCPU()-cpu0)/1e3/(iops*5), "server-cpu-us/io")
			}
		})
	}
}

// selfCPU is this process's user+system CPU time in nanoseconds.
func selfCPU() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
