package iscsi

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// CHAP (RFC 1994 with the iSCSI encoding of RFC 7143 section 12.1.3):
// response = MD5(identifier || secret || challenge), binary values written
// as 0x-hex (we also accept 0b-base64).

const chapMD5 = "5"

func chapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

func decodeBinary(key, v string) ([]byte, error) {
	var b []byte
	var err error
	switch {
	case strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X"):
		b, err = hex.DecodeString(v[2:])
	case strings.HasPrefix(v, "0b") || strings.HasPrefix(v, "0B"):
		b, err = base64.StdEncoding.DecodeString(v[2:])
	default:
		err = fmt.Errorf("no 0x or 0b prefix")
	}
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%w: %s=%.40q is not a binary value", ErrProtocol, key, v)
	}
	return b, nil
}

func encodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }

// chapState tracks the initiator side of a CHAP exchange.
type chapState struct {
	user, secret             string
	targetUser, targetSecret string // mutual CHAP when targetSecret != ""
	rand                     io.Reader
	myID                     byte
	myChallenge              []byte
}

func lookup(pairs []kv, key string) (string, bool) {
	for _, p := range pairs {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// answer computes our CHAP_N/CHAP_R from the target's CHAP_A/CHAP_I/CHAP_C
// and, for mutual CHAP, adds our own CHAP_I/CHAP_C.
func (c *chapState) answer(pairs []kv) ([]kv, error) {
	if a, _ := lookup(pairs, "CHAP_A"); a != chapMD5 {
		return nil, fmt.Errorf("%w: target chose CHAP_A=%.20q, only MD5 (5) is supported", ErrAuth, a)
	}
	iv, ok := lookup(pairs, "CHAP_I")
	if !ok {
		return nil, fmt.Errorf("%w: CHAP_I missing", ErrProtocol)
	}
	id, err := strconv.ParseUint(iv, 10, 8)
	if err != nil {
		return nil, fmt.Errorf("%w: CHAP_I=%.20q is not a byte", ErrProtocol, iv)
	}
	cv, ok := lookup(pairs, "CHAP_C")
	if !ok {
		return nil, fmt.Errorf("%w: CHAP_C missing", ErrProtocol)
	}
	challenge, err := decodeBinary("CHAP_C", cv)
	if err != nil {
		return nil, err
	}
	if len(challenge) > 1024 {
		return nil, fmt.Errorf("%w: CHAP_C of %d bytes", ErrProtocol, len(challenge))
	}
	out := []kv{
		{"CHAP_N", c.user},
		{"CHAP_R", encodeHex(chapResponse(byte(id), c.secret, challenge))},
	}
	if c.targetSecret != "" {
		var b [17]byte
		if _, err := io.ReadFull(c.rand, b[:]); err != nil {
			return nil, fmt.Errorf("iscsi: CHAP challenge: %w", err)
		}
		c.myID, c.myChallenge = b[0], b[1:]
		if subtle.ConstantTimeCompare(c.myChallenge, challenge) == 1 {
			return nil, fmt.Errorf("%w: target reflected our challenge", ErrAuth)
		}
		out = append(out, kv{"CHAP_I", strconv.Itoa(int(c.myID))}, kv{"CHAP_C", encodeHex(c.myChallenge)})
	}
	return out, nil
}

// verify checks the target's CHAP_N/CHAP_R in mutual CHAP.
func (c *chapState) verify(pairs []kv) error {
	if c.targetSecret == "" {
		return nil
	}
	n, _ := lookup(pairs, "CHAP_N")
	if c.targetUser != "" && n != c.targetUser {
		return fmt.Errorf("%w: target authenticated as %.64q, expected %q", ErrAuth, n, c.targetUser)
	}
	rv, ok := lookup(pairs, "CHAP_R")
	if !ok {
		return fmt.Errorf("%w: target did not answer our CHAP challenge (mutual CHAP)", ErrAuth)
	}
	r, err := decodeBinary("CHAP_R", rv)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(r, chapResponse(c.myID, c.targetSecret, c.myChallenge)) != 1 {
		return fmt.Errorf("%w: target's CHAP response is wrong (check the target secret)", ErrAuth)
	}
	return nil
}
