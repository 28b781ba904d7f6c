package mirror

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
)

// bitset is the in-memory chunk bitmap, one bit per chunk. Its words map
// one-to-one onto the on-disk bitmap blocks: block b holds words
// [b*511, b*511+511) (FORMAT.md).
type bitset struct {
	n     int64
	words []uint64
}

func newBitset(n int64) *bitset {
	return &bitset{n: n, words: make([]uint64, bitmapBlocks(n)*wordsPerBlock)}
}

func (b *bitset) get(i int64) bool { return b.words[i>>6]&(1<<(uint(i)&63)) != 0 }
func (b *bitset) set(i int64)      { b.words[i>>6] |= 1 << (uint(i) & 63) }
func (b *bitset) clr(i int64)      { b.words[i>>6] &^= 1 << (uint(i) & 63) }

// setAll sets every bit of the n chunks (bits past n stay clear).
func (b *bitset) setAll() {
	for i := int64(0); i < b.n; i++ {
		b.set(i)
	}
}

func (b *bitset) count() int64 {
	var c int64
	for _, w := range b.words {
		c += int64(bits.OnesCount64(w))
	}
	return c
}

// or merges o into b (same size).
func (b *bitset) or(o *bitset) {
	for i := range b.words {
		b.words[i] |= o.words[i]
	}
}

// next returns the first set bit at or after i, or -1.
func (b *bitset) next(i int64) int64 {
	if i < 0 {
		i = 0
	}
	for i < b.n {
		w := b.words[i>>6] >> (uint(i) & 63)
		if w != 0 {
			j := i + int64(bits.TrailingZeros64(w))
			if j < b.n {
				return j
			}
			return -1
		}
		i = (i | 63) + 1
	}
	return -1
}

func (b *bitset) blocks() int64 { return int64(len(b.words)) / wordsPerBlock }

// encodeBlock writes on-disk bitmap block blk into a 4096-byte buffer.
func (b *bitset) encodeBlock(blk int64, out []byte) {
	le := binary.LittleEndian
	w := b.words[blk*wordsPerBlock : (blk+1)*wordsPerBlock]
	for i, x := range w {
		le.PutUint64(out[8*i:], x)
	}
	le.PutUint32(out[bitmapBitsBytes:], uint32(blk))
	le.PutUint32(out[crcOff:], crc32.Checksum(out[:crcOff], castagnoli))
}

// decodeBlock strictly decodes on-disk bitmap block blk into b. Bits past
// the last chunk must be clear. On error b is unchanged.
func (b *bitset) decodeBlock(blk int64, in []byte) error {
	if len(in) != blockBytes {
		return fmt.Errorf("bitmap block %d is %d bytes, want %d", blk, len(in), blockBytes)
	}
	if blk < 0 || blk >= b.blocks() {
		return fmt.Errorf("bitmap block %d is out of range (%d blocks)", blk, b.blocks())
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(in[crcOff:]), crc32.Checksum(in[:crcOff], castagnoli); got != want {
		return fmt.Errorf("bitmap block %d checksum mismatch (stored %08x, computed %08x)", blk, got, want)
	}
	if idx := le.Uint32(in[bitmapBitsBytes:]); int64(idx) != blk {
		return fmt.Errorf("bitmap block %d carries index %d (misplaced write?)", blk, idx)
	}
	var tmp [wordsPerBlock]uint64
	for i := range tmp {
		tmp[i] = le.Uint64(in[8*i:])
	}
	// Bits past the last chunk (only in the last block) must be clear.
	if lastOK := b.n - blk*chunksPerBlock; lastOK < chunksPerBlock {
		for i := range tmp {
			lo := int64(64 * i)
			w := tmp[i]
			if lo+64 > lastOK {
				if lo < lastOK {
					w &^= (1 << uint(lastOK-lo)) - 1
				}
				if w != 0 {
					return fmt.Errorf("bitmap block %d marks chunk %d beyond the last chunk %d", blk, blk*chunksPerBlock+lo+int64(bits.TrailingZeros64(w)), b.n-1)
				}
			}
		}
	}
	copy(b.words[blk*wordsPerBlock:], tmp[:])
	return nil
}

// setBlockAll marks every chunk of block blk (used when a block is unreadable:
// the safe assumption is that all its chunks may differ).
func (b *bitset) setBlockAll(blk int64) {
	lo := blk * chunksPerBlock
	hi := min(lo+chunksPerBlock, b.n)
	for i := lo; i < hi; i++ {
		b.set(i)
	}
}

// String lists the set bits (for logs and test failures).
func (b *bitset) String() string {
	if b == nil {
		return "<nil>"
	}
	var out []int64
	for c := b.next(0); c >= 0 && len(out) < 64; c = b.next(c + 1) {
		out = append(out, c)
	}
	return fmt.Sprint(out)
}
