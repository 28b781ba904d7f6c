package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hamirror/hamirror/testenv/bench"
	"github.com/hamirror/hamirror/testenv/lab"
)

// benchLab boots one lab VM with two 512 MiB virtio disks and measures
// O_DIRECT writes through each way of mirroring them — md RAID1 (without
// and with a write-intent bitmap), dm-mirror and hamirror's /dev/nbd0 when mirrord can attach it — beside
// one disk alone. Everything runs under TCG, so only the ratios mean much.
func benchLab() error {
	if err := lab.Prerequisites(); err != nil {
		fmt.Printf("lab section skipped: %v\n", err)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "hamirror-bench-lab-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l, err := lab.Start(ctx, lab.Config{
		Dir: dir,
		Nodes: []lab.NodeConfig{{Name: "bench", CPUs: benchCPUs(), Disks: []lab.Disk{
			{Name: "scratch", Size: 64 << 20}, {Name: "leg0", Size: 512 << 20}, {Name: "leg1", Size: 512 << 20}}}},
		Deadline: time.Now().Add(20 * time.Minute),
		Logf:     func(f string, a ...any) { fmt.Printf(f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	defer l.Close()
	n := l.Nodes()[0]
	subjects := []lab.Mirror{lab.Plain("/dev/vdb"), lab.MDRAID1("/dev/vdb", "/dev/vdc"),
		lab.MDRAID1Bitmap("/dev/vdb", "/dev/vdc"), lab.DMMirror("/dev/vdb", "/dev/vdc")}
	if hm, ok, why := lab.HamirrorIfAvailable(ctx, n, "/dev/vdb", "/dev/vdc"); ok {
		subjects = append(subjects, hm)
	} else {
		fmt.Printf("hamirror left out of the lab bench: %s\n", why)
	}
	const rounds = 3
	seq := map[string][]float64{}
	rnd := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, m := range subjects {
			res, err := n.Run(ctx, m.Setup)
			if err == nil {
				err = res.Err()
			}
			if err != nil {
				return fmt.Errorf("%s setup: %w", m.Name, err)
			}
			s, err := lab.WriteLoad(ctx, n, m.Device, 1<<20, 256<<20, 96, false)
			if err != nil {
				return fmt.Errorf("%s sequential: %w", m.Name, err)
			}
			w, err := lab.WriteLoad(ctx, n, m.Device, 4096, 256<<20, 1500, true)
			if err != nil {
				return fmt.Errorf("%s random: %w", m.Name, err)
			}
			seq[m.Name] = append(seq[m.Name], s.MBps())
			rnd[m.Name] = append(rnd[m.Name], w.IOPS())
			if res, err := n.Run(ctx, m.Teardown); err != nil || res.Exit != 0 {
				return fmt.Errorf("%s teardown: %v %v", m.Name, err, res.Err())
			}
		}
	}
	note := fmt.Sprintf("median of %d, TCG", rounds)
	st := bench.Table{Title: "lab VM: sequential write 1 MiB O_DIRECT, 96 MiB + fsync", Unit: "MB/s", Base: "md-raid1"}
	rt := bench.Table{Title: "lab VM: random write 4 KiB O_DIRECT QD1, 1500 ops + fsync", Unit: "IOPS", Base: "md-raid1"}
	for _, m := range subjects {
		st.Add(m.Name, bench.Median(seq[m.Name]), note)
		rt.Add(m.Name, bench.Median(rnd[m.Name]), note)
	}
	st.Print(os.Stdout)
	rt.Print(os.Stdout)
	fmt.Printf("boot to agent: %v\n", n.BootTime.Round(time.Millisecond))
	return nil
}

// benchCPUs is the lab VM's vCPU count: $HAMIRROR_LAB_CPUS, default 1
// (on a loaded 2-core host, 2 TCG vCPUs measured every subject 2-4x
// slower and hamirror relatively worse).
func benchCPUs() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("HAMIRROR_LAB_CPUS"), &n); err == nil && n > 0 {
		return n
	}
	return 1
}
