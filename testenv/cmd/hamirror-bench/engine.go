package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hamirror/hamirror/mirror"
	"github.com/hamirror/hamirror/testenv/bench"
)

// benchEngine measures the mirror engine directly (no NBD): 4 KiB random
// writes at QD1 and QD16 and 1 MiB sequential writes on a volume over two
// files, beside the same workload on one raw file leg (the peer: a mirror
// can at best match one disk), and the throughput of a full resync.
func benchEngine() error {
	dir, err := os.MkdirTemp("", "hamirror-bench-engine")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const size = 1 << 30
	mk := func(name string) (mirror.Leg, error) {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		if err := f.Truncate(size); err != nil {
			return nil, err
		}
		f.Close()
		return mirror.OpenLeg(p, mirror.LegOptions{})
	}
	raw, err := mk("raw")
	if err != nil {
		return err
	}
	defer raw.Close()
	l0, err := mk("leg0")
	if err != nil {
		return err
	}
	l1, err := mk("leg1")
	if err != nil {
		return err
	}
	if _, err := mirror.Create([2]mirror.Leg{l0, l1}, mirror.CreateOptions{NodeID: "bench"}); err != nil {
		return err
	}
	opts := mirror.DefaultOptions()
	opts.NodeID = "bench"
	v, err := mirror.Assemble([2]mirror.Leg{l0, l1}, opts)
	if err != nil {
		return err
	}
	rawW := func(p []byte, off int64) error { return raw.WriteAt(p, off, false) }
	volW := func(p []byte, off int64) error { return v.WriteAt(p, off, false) }
	for _, w := range []struct {
		title  string
		bs, qd int
		seq    bool
	}{{"engine: 4 KiB random write, QD1", 4096, 1, false}, {"engine: 4 KiB random write, QD16", 4096, 16, false}, {"engine: 1 MiB sequential write, QD4", 1 << 20, 4, true}} {
		t := bench.Table{Title: w.title, Unit: "MB/s", Base: "raw file"}
		var rr, vr []float64
		for range 3 {
			rr = append(rr, ioRate(rawW, size/2, w.bs, w.qd, w.seq))
			vr = append(vr, ioRate(volW, size/2, w.bs, w.qd, w.seq))
		}
		t.Add("hamirror (2 file legs)", bench.Median(vr))
		t.Add("raw file", bench.Median(rr), "one leg, O_DIRECT")
		t.Print(os.Stdout)
	}
	// Random reads: the mirror may beat one disk by spreading over both.
	rawR := func(p []byte, off int64) error { return raw.ReadAt(p, off) }
	volR := func(p []byte, off int64) error { return v.ReadAt(p, off) }
	t := bench.Table{Title: "engine: 4 KiB random read, QD16", Unit: "MB/s", Base: "raw file"}
	var rr, vr []float64
	for range 3 {
		rr = append(rr, ioRate(rawR, size/2, 4096, 16, false))
		vr = append(vr, ioRate(volR, size/2, 4096, 16, false))
	}
	t.Add("hamirror (2 file legs)", bench.Median(vr), "reads balanced over both legs")
	t.Add("raw file", bench.Median(rr), "one leg, O_DIRECT")
	t.Print(os.Stdout)

	// Full resync throughput.
	if err := v.FailLeg(1); err != nil {
		return err
	}
	blank, err := mk("blank")
	if err != nil {
		return err
	}
	start := time.Now()
	if err := v.AddLeg(1, blank); err != nil {
		return err
	}
	if err := v.WaitInSync(context.Background()); err != nil {
		return err
	}
	t = bench.Table{Title: "engine: full resync of a 1 GiB leg", Unit: "MB/s", Base: "hamirror"}
	t.Add("hamirror", float64(v.Size())/time.Since(start).Seconds()/1e6, "file to file, default rates")
	t.Print(os.Stdout)
	return v.Close()
}

// ioRate runs I/Os of bs bytes over [0, span) with qd writers for about
// two seconds and returns MB/s (reads use the same function).
func ioRate(write func([]byte, int64) error, span int64, bs, qd int, seq bool) float64 {
	deadline := time.Now().Add(2 * time.Second)
	var mu sync.Mutex
	var total int64
	var wg sync.WaitGroup
	for w := range qd {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			buf := make([]byte, bs)
			n := int64(0)
			off := int64(w) * span / int64(qd)
			for time.Now().Before(deadline) {
				if !seq {
					off = r.Int64N(span/int64(bs)) * int64(bs)
				}
				if err := write(buf, off); err != nil {
					fmt.Fprintln(os.Stderr, "I/O:", err)
					return
				}
				n += int64(bs)
				off = (off + int64(bs)) % span
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	return float64(total) / 2 / 1e6
}
