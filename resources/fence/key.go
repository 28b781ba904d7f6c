package fence

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// DeriveKey is a node's default reservation key: 8 bytes of
// SHA-256("hamirror fence key", cluster, node), never 0 (0 means "no key"
// to SPC-4). Stable for a node of a cluster and different for each node,
// so the config needs a fence_key only to match keys an array already
// holds from another installation.
func DeriveKey(cluster, node string) uint64 {
	h := sha256.New()
	for _, s := range []string{"hamirror fence key", cluster, node} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	sum := h.Sum(nil)
	for i := 0; i+8 <= len(sum); i += 8 {
		if k := binary.BigEndian.Uint64(sum[i:]); k != 0 {
			return k
		}
	}
	return 1 // four zero words of SHA-256: never, but never 0 either
}

// ParseKey reads a fence_key: 1 to 16 hexadecimal digits, with or without
// 0x, not zero (the form sg_persist and `mirrorctl iscsi info` print).
func ParseKey(s string) (uint64, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X")
	if h == "" || len(h) > 16 {
		return 0, fmt.Errorf("fence key %q: want 1 to 16 hexadecimal digits (8 bytes), e.g. 0x1a2b3c4d5e6f7081", s)
	}
	k, err := strconv.ParseUint(h, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("fence key %q: want hexadecimal digits (8 bytes), e.g. 0x1a2b3c4d5e6f7081", s)
	}
	if k == 0 {
		return 0, fmt.Errorf("fence key %q: 0 is not a reservation key (SPC-4 uses it for \"none\")", s)
	}
	return k, nil
}

// FormatKey prints a key as ParseKey reads it: 0x and 16 hex digits.
func FormatKey(k uint64) string { return fmt.Sprintf("0x%016x", k) }
