package nbd

import (
	"math/bits"
	"sync"
	"unsafe"
)

// Buffer size classes: powers of two from 4 KiB to 32 MiB.
const (
	minClassShift = 12
	maxClassShift = 25
)

// bufPool recycles request buffers by power-of-two size class. Buffers are
// 4096-byte aligned so a backend doing O_DIRECT can use them as they are.
type bufPool struct {
	classes [maxClassShift - minClassShift + 1]sync.Pool
	holders sync.Pool // empty *[]byte, so that put does not allocate one
}

func newBufPool() *bufPool { return &bufPool{} }

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// get returns a buffer of length n (its contents are garbage).
func (p *bufPool) get(n int) []byte {
	c := classOf(n)
	if c >= len(p.classes) {
		return alignedBuf(n)
	}
	if bp, ok := p.classes[c].Get().(*[]byte); ok {
		b := *bp
		*bp = nil
		p.holders.Put(bp)
		return b[:n]
	}
	return alignedBuf(1 << (c + minClassShift))[:n]
}

// put returns b to its class; buffers not from get are dropped.
func (p *bufPool) put(b []byte) {
	c := cap(b)
	if c < 1<<minClassShift || c&(c-1) != 0 {
		return
	}
	cl := classOf(c)
	if cl >= len(p.classes) {
		return
	}
	bp, _ := p.holders.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = b[:c]
	p.classes[cl].Put(bp)
}

// alignedBuf allocates n bytes starting on a 4096-byte boundary, with
// capacity exactly n.
func alignedBuf(n int) []byte {
	const align = 4096
	raw := make([]byte, n+align)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) & (align - 1)); r != 0 {
		off = align - r
	}
	return raw[off : off+n : off+n]
}
