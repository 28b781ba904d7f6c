package iscsi

import (
	"bytes"
	"fmt"
)

// kv is one key=value pair of a text or login data segment (RFC 7143
// section 6). Order matters for negotiation, so pairs stay in a slice.
type kv struct {
	Key, Value string
}

const (
	maxKeyLen   = 63
	maxValueLen = 8192
)

// encodeText renders pairs as key=value NUL-terminated strings.
func encodeText(pairs []kv) []byte {
	var b bytes.Buffer
	for _, p := range pairs {
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(p.Value)
		b.WriteByte(0)
	}
	return b.Bytes()
}

// decodeText parses a data segment of key=value pairs. Every pair must be
// NUL-terminated, have a non-empty key of legal characters and an '='.
// Trailing NUL padding is accepted.
func decodeText(data []byte) ([]kv, error) {
	var out []kv
	for len(data) > 0 {
		i := bytes.IndexByte(data, 0)
		if i < 0 {
			return nil, fmt.Errorf("%w: text key=value pair not NUL-terminated", ErrProtocol)
		}
		pair := data[:i]
		data = data[i+1:]
		if len(pair) == 0 {
			continue // padding
		}
		eq := bytes.IndexByte(pair, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%w: text pair %.40q without key=value", ErrProtocol, pair)
		}
		key, val := pair[:eq], pair[eq+1:]
		if len(key) > maxKeyLen {
			return nil, fmt.Errorf("%w: text key of %d bytes", ErrProtocol, len(key))
		}
		for _, c := range key {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == '@' || c == '_') {
				return nil, fmt.Errorf("%w: text key %.40q has an illegal character", ErrProtocol, key)
			}
		}
		if len(val) > maxValueLen {
			return nil, fmt.Errorf("%w: value of %s is %d bytes", ErrProtocol, key, len(val))
		}
		out = append(out, kv{string(key), string(val)})
	}
	return out, nil
}
