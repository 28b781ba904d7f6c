package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writeMain writes a device or file sequentially or at random aligned
// offsets (like dd oflag=direct) and prints {"bytes","seconds","ops"} as JSON.
func writeMain(args []string) error {
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	path := fs.String("path", "", "device or file to write")
	bs := fs.Int("bs", 1<<20, "block size in bytes")
	size := fs.Int64("size", 64<<20, "bytes to write; random offsets fall below this")
	random := fs.Bool("random", false, "random aligned offsets instead of sequential")
	direct := fs.Bool("direct", true, "O_DIRECT")
	fsync := fs.Bool("fsync", true, "fsync at the end (counted in the time)")
	count := fs.Int64("count", 0, "blocks to write (default size/bs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	flags := os.O_WRONLY
	if *direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(*path, flags, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := alignedBuf(*bs)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	blocks := *size / int64(*bs)
	if blocks < 1 {
		return fmt.Errorf("size %d is smaller than one block of %d", *size, *bs)
	}
	n := blocks
	if *count > 0 {
		n = *count
	}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	for i := int64(0); i < n; i++ {
		off := (i % blocks) * int64(*bs)
		if *random {
			off = rng.Int64N(blocks) * int64(*bs)
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
	}
	if *fsync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	secs := time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(map[string]float64{"bytes": float64(n * int64(*bs)), "seconds": secs, "ops": float64(n)})
}

// alignedBuf returns n bytes aligned to 4096 for O_DIRECT.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	if off == 4096 {
		off = 0
	}
	return b[off : off+n]
}
