package agentproto

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTripEveryType(t *testing.T) {
	cases := []struct {
		typ byte
		in  any
		out any
	}{
		{TypePing, &Ping{Nonce: 42}, &Ping{}},
		{TypeExec, &Exec{ID: 7, Argv: []string{"sh", "-c", "echo hi"}, Stdin: []byte{0, 1, 2}, TimeoutMS: 5000}, &Exec{}},
		{TypeResult, &Result{ID: 7, Exit: 3, Stdout: []byte("out\x00"), Stderr: []byte("err"), Error: "x"}, &Result{}},
		{TypePut, &Put{ID: 9, Path: "/tmp/a", Mode: 0o755, Data: []byte("#!/bin/sh\n")}, &Put{}},
		{TypeSerial, &Serial{Seq: 1, Body: []byte("beat"), CRC: 0xdeadbeef}, &Serial{}},
	}
	var stream bytes.Buffer
	w := NewWriter(&stream)
	for _, c := range cases {
		if err := w.Write(c.typ, c.in); err != nil {
			t.Fatalf("write %c: %v", c.typ, err)
		}
	}
	for _, c := range cases {
		typ, p, err := ReadFrame(&stream)
		if err != nil {
			t.Fatalf("read %c: %v", c.typ, err)
		}
		if typ != c.typ {
			t.Fatalf("type %c, want %c", typ, c.typ)
		}
		if err := Decode(p, c.out); err != nil {
			t.Fatalf("decode %c: %v", c.typ, err)
		}
		if !reflect.DeepEqual(c.in, c.out) {
			t.Errorf("%c: got %+v, want %+v", c.typ, c.out, c.in)
		}
	}
	if _, _, err := ReadFrame(&stream); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
}

func TestReadFrameRejectsBadInput(t *testing.T) {
	good, _ := Encode(TypePing, Ping{Nonce: 1})
	cases := map[string]struct {
		in   []byte
		want error
		msg  string
	}{
		"bad magic":         {append([]byte("XX"), good[2:]...), ErrBadMagic, ""},
		"truncated header":  {good[:4], io.ErrUnexpectedEOF, ""},
		"truncated payload": {good[:len(good)-1], io.ErrUnexpectedEOF, ""},
		"oversized":         {[]byte{'H', 'L', 'P', 0x01, 0x00, 0x00, 0x01}, nil, "limit"},
	}
	for name, c := range cases {
		_, _, err := ReadFrame(bytes.NewReader(c.in))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
		if c.msg != "" && !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want mention of %q", name, err, c.msg)
		}
	}
}

func TestDecodeIsStrict(t *testing.T) {
	var p Ping
	if err := Decode([]byte(`{"nonce":1,"extra":2}`), &p); err == nil {
		t.Error("unknown field accepted")
	}
	if err := Decode([]byte(`{"nonce":1}{"nonce":2}`), &p); err == nil {
		t.Error("trailing object accepted")
	}
	if err := Decode([]byte(`{"nonce":"x"}`), &p); err == nil {
		t.Error("wrong type accepted")
	}
	if err := Decode([]byte(`{"nonce":5}`), &p); err != nil || p.Nonce != 5 {
		t.Errorf("valid payload: %v %+v", err, p)
	}
}

func TestAppendFrameRefusesHugePayload(t *testing.T) {
	if _, err := AppendFrame(nil, TypeExec, make([]byte, MaxPayload+1)); err == nil {
		t.Error("oversized payload framed")
	}
}

func FuzzReadFrame(f *testing.F) {
	g, _ := Encode(TypeExec, Exec{ID: 1, Argv: []string{"true"}})
	f.Add(g)
	f.Add([]byte("HLP\x00\x00\x00\x02{}"))
	f.Add([]byte("HL"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			typ, p, err := ReadFrame(r)
			if err != nil {
				return
			}
			var e Exec
			var res Result
			_ = Decode(p, &e)
			_ = Decode(p, &res)
			// A frame that decoded re-encodes to the same bytes.
			again, err := AppendFrame(nil, typ, p)
			if err != nil || !bytes.HasSuffix(b[:len(b)-r.Len()], again) {
				t.Fatalf("re-encoding mismatch: %v", err)
			}
		}
	})
}
