package iscsi

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestNegotiationResultFunctions(t *testing.T) {
	want := Params{HeaderDigest: true, DataDigest: false, MaxRecvDataSegmentLength: 65536,
		MaxBurstLength: 1 << 20, FirstBurstLength: 65536, InitialR2T: false, ImmediateData: true, MaxOutstandingR2T: 1}
	cases := []struct {
		name   string
		answer []kv
		check  func(p Params) bool
		reply  []kv
		err    error
	}{
		{"target defaults", nil, func(p Params) bool {
			// Unanswered keys keep the RFC defaults.
			return p.InitialR2T && p.MaxBurstLength == 262144 && p.MaxSendDataSegmentLength == 8192 && !p.HeaderDigest
		}, nil, nil},
		{"agreement", []kv{{"HeaderDigest", "CRC32C"}, {"DataDigest", "None"}, {"MaxRecvDataSegmentLength", "131072"},
			{"MaxBurstLength", "524288"}, {"FirstBurstLength", "65536"}, {"InitialR2T", "No"}, {"ImmediateData", "Yes"}},
			func(p Params) bool {
				return p.HeaderDigest && !p.DataDigest && p.MaxSendDataSegmentLength == 131072 &&
					p.MaxBurstLength == 524288 && !p.InitialR2T && p.ImmediateData && p.MaxRecvDataSegmentLength == 65536
			}, nil, nil},
		{"clamped to our offer", []kv{{"MaxBurstLength", "16776192"}, {"FirstBurstLength", "16776192"}},
			func(p Params) bool { return p.MaxBurstLength == 1<<20 && p.FirstBurstLength == 65536 }, nil, nil},
		{"InitialR2T is OR, ImmediateData is AND", []kv{{"InitialR2T", "Yes"}, {"ImmediateData", "No"}},
			func(p Params) bool { return p.InitialR2T && !p.ImmediateData }, nil, nil},
		{"FirstBurst capped by MaxBurst", []kv{{"MaxBurstLength", "4096"}},
			func(p Params) bool { return p.FirstBurstLength == 4096 }, nil, nil},
		{"digest we did not offer", []kv{{"DataDigest", "CRC32C"}}, nil, nil, ErrProtocol},
		{"unknown digest", []kv{{"HeaderDigest", "MD5"}}, nil, nil, ErrProtocol},
		{"ERL 1", []kv{{"ErrorRecoveryLevel", "1"}}, nil, nil, ErrProtocol},
		{"no in-order data", []kv{{"DataPDUInOrder", "No"}}, nil, nil, ErrProtocol},
		{"bad number", []kv{{"MaxBurstLength", "lots"}}, nil, nil, ErrProtocol},
		{"MaxRecvDataSegmentLength too small", []kv{{"MaxRecvDataSegmentLength", "12"}}, nil, nil, ErrProtocol},
		{"bad boolean", []kv{{"InitialR2T", "Maybe"}}, nil, nil, ErrProtocol},
		{"Reject keeps default", []kv{{"HeaderDigest", "Reject"}},
			func(p Params) bool { return !p.HeaderDigest }, nil, nil},
		{"target proposals are answered", []kv{{"X-com.vendor.Key", "1"}, {"TargetAlias", "a"}},
			nil, []kv{{"X-com.vendor.Key", "NotUnderstood"}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNegotiator(want, false)
			n.offer()
			reply, err := n.apply(c.answer)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("apply: %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.check != nil && !c.check(n.result()) {
				t.Fatalf("result %+v", n.result())
			}
			if len(reply) != len(c.reply) || (len(reply) > 0 && reply[0] != c.reply[0]) {
				t.Fatalf("reply %v, want %v", reply, c.reply)
			}
		})
	}
}

func TestDiscoveryOffersOnlyConnectionKeys(t *testing.T) {
	n := newNegotiator(Params{MaxRecvDataSegmentLength: 8192}, true)
	for _, p := range n.offer() {
		switch p.Key {
		case "HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength":
		default:
			t.Errorf("discovery session offers %s", p.Key)
		}
	}
}

// RFC 1994 CHAP: MD5(id || secret || challenge), checked against a vector
// computed independently (Python hashlib).
func TestCHAPResponse(t *testing.T) {
	challenge := make([]byte, 16)
	for i := range challenge {
		challenge[i] = byte(i)
	}
	got := hex.EncodeToString(chapResponse(7, "secret-123", challenge))
	if got != "3e49d1d28b34bc14ae73bd01f4179208" {
		t.Fatalf("CHAP response %s", got)
	}
}

func TestCHAPExchange(t *testing.T) {
	c := &chapState{user: "alice", secret: "s3cret-secret", targetUser: "array", targetSecret: "t-secret-12345",
		rand: bytes.NewReader(bytes.Repeat([]byte{9}, 64))}
	ans, err := c.answer([]kv{{"CHAP_A", "5"}, {"CHAP_I", "42"}, {"CHAP_C", "0x00112233"}})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := lookup(ans, "CHAP_N"); v != "alice" {
		t.Fatalf("CHAP_N %q", v)
	}
	wantR := "0x" + hex.EncodeToString(chapResponse(42, "s3cret-secret", []byte{0, 0x11, 0x22, 0x33}))
	if v, _ := lookup(ans, "CHAP_R"); v != wantR {
		t.Fatalf("CHAP_R %s, want %s", v, wantR)
	}
	idv, _ := lookup(ans, "CHAP_I")
	cv, _ := lookup(ans, "CHAP_C")
	if idv != "9" || cv != "0x"+hex.EncodeToString(bytes.Repeat([]byte{9}, 16)) {
		t.Fatalf("our challenge CHAP_I=%s CHAP_C=%s", idv, cv)
	}
	good := "0x" + hex.EncodeToString(chapResponse(9, "t-secret-12345", bytes.Repeat([]byte{9}, 16)))
	if err := c.verify([]kv{{"CHAP_N", "array"}, {"CHAP_R", good}}); err != nil {
		t.Fatalf("right target response: %v", err)
	}
	if err := c.verify([]kv{{"CHAP_N", "array"}, {"CHAP_R", "0x00"}}); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong target response: %v", err)
	}
	if err := c.verify([]kv{{"CHAP_N", "mallory"}, {"CHAP_R", good}}); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong target name: %v", err)
	}
	if err := c.verify(nil); !errors.Is(err, ErrAuth) {
		t.Fatalf("no target response: %v", err)
	}
	// Base64 challenges are accepted too.
	if _, err := c.answer([]kv{{"CHAP_A", "5"}, {"CHAP_I", "1"}, {"CHAP_C", "0bABEiMw=="}}); err != nil {
		t.Fatalf("0b challenge: %v", err)
	}
	for _, bad := range [][]kv{
		{{"CHAP_A", "7"}, {"CHAP_I", "1"}, {"CHAP_C", "0x00"}},
		{{"CHAP_A", "5"}, {"CHAP_I", "300"}, {"CHAP_C", "0x00"}},
		{{"CHAP_A", "5"}, {"CHAP_I", "1"}, {"CHAP_C", "00"}},
		{{"CHAP_A", "5"}, {"CHAP_I", "1"}},
		{{"CHAP_A", "5"}, {"CHAP_C", "0x00"}},
	} {
		if _, err := c.answer(bad); err == nil {
			t.Errorf("answer(%v) accepted", bad)
		}
	}
	// A target that reflects our own challenge is refused.
	r := &chapState{user: "a", secret: "s", targetSecret: "t", rand: bytes.NewReader(append([]byte{1}, bytes.Repeat([]byte{5}, 16)...))}
	if _, err := r.answer([]kv{{"CHAP_A", "5"}, {"CHAP_I", "1"}, {"CHAP_C", "0x" + hex.EncodeToString(bytes.Repeat([]byte{5}, 16))}}); !errors.Is(err, ErrAuth) {
		t.Fatalf("reflected challenge: %v", err)
	}
}

func resp(csg, nsg byte, transit bool, pairs ...kv) loginResponse {
	return loginResponse{CSG: csg, NSG: nsg, Transit: transit, Data: encodeText(pairs)}
}

func TestLoginMachineNoAuth(t *testing.T) {
	m := newLoginMachine(loginSetup{InitiatorName: "iqn.i", TargetName: "iqn.t", Want: Params{MaxRecvDataSegmentLength: 8192, MaxBurstLength: 65536, FirstBurstLength: 8192, MaxOutstandingR2T: 1}})
	s := m.first()
	if !s.Transit || s.CSG != stageSecurity || s.NSG != stageOperational {
		t.Fatalf("first step %+v", s)
	}
	if v, _ := lookup(s.Pairs, "TargetName"); v != "iqn.t" {
		t.Fatalf("TargetName %q", v)
	}
	s, done, err := m.next(resp(0, 1, true, kv{"AuthMethod", "None"}, kv{"TargetPortalGroupTag", "1"}))
	if err != nil || done || s.CSG != stageOperational || s.NSG != stageFullFeature || !s.Transit {
		t.Fatalf("after security: %+v %v %v", s, done, err)
	}
	if v, _ := lookup(s.Pairs, "ErrorRecoveryLevel"); v != "0" {
		t.Fatalf("operational offer lacks ErrorRecoveryLevel=0: %v", s.Pairs)
	}
	// The target does not transit yet: we send another (empty) request.
	s, done, err = m.next(resp(1, 3, false, kv{"MaxBurstLength", "32768"}))
	if err != nil || done || len(s.Pairs) != 0 {
		t.Fatalf("second operational round: %+v %v %v", s, done, err)
	}
	_, done, err = m.next(resp(1, 3, true))
	if err != nil || !done {
		t.Fatalf("login did not complete: %v", err)
	}
	if m.params().MaxBurstLength != 32768 {
		t.Fatalf("params %+v", m.params())
	}
}

func TestLoginMachineCHAPAndErrors(t *testing.T) {
	chap := &chapState{user: "u", secret: "secret-secret", rand: bytes.NewReader(make([]byte, 64))}
	m := newLoginMachine(loginSetup{InitiatorName: "iqn.i", TargetName: "iqn.t", CHAP: chap, Want: Params{MaxRecvDataSegmentLength: 8192, MaxBurstLength: 8192, FirstBurstLength: 8192, MaxOutstandingR2T: 1}})
	s := m.first()
	if s.Transit {
		t.Fatal("transit requested before CHAP")
	}
	s, _, err := m.next(resp(0, 1, false, kv{"AuthMethod", "CHAP"}))
	if err != nil || s.Pairs[0] != (kv{"CHAP_A", "5"}) {
		t.Fatalf("CHAP_A step: %+v %v", s, err)
	}
	s, _, err = m.next(resp(0, 1, false, kv{"CHAP_A", "5"}, kv{"CHAP_I", "3"}, kv{"CHAP_C", "0xabcdef"}))
	if err != nil || !s.Transit {
		t.Fatalf("CHAP_R step: %+v %v", s, err)
	}
	s, _, err = m.next(resp(0, 1, true))
	if err != nil || s.CSG != stageOperational {
		t.Fatalf("after CHAP: %+v %v", s, err)
	}
	errs := []struct {
		class, detail byte
		want          error
	}{{2, 1, ErrAuth}, {2, 2, ErrLogin}, {2, 3, ErrLogin}, {3, 1, ErrLogin}, {1, 1, ErrLogin}}
	for _, e := range errs {
		m := newLoginMachine(loginSetup{InitiatorName: "iqn.i", TargetName: "iqn.t"})
		m.first()
		r := resp(0, 1, false)
		r.StatusClass, r.StatusDetail = e.class, e.detail
		if _, _, err := m.next(r); !errors.Is(err, e.want) {
			t.Errorf("status %d/%d: %v, want %v", e.class, e.detail, err, e.want)
		}
	}
	// A target that refuses our AuthMethod=None (Linux LIO answers
	// "authentication failure" 0201 where an ACL requires CHAP) must not
	// blame credentials we never sent.
	m = newLoginMachine(loginSetup{InitiatorName: "iqn.i", TargetName: "iqn.t"})
	m.first()
	r := resp(0, 1, false)
	r.StatusClass, r.StatusDetail = 2, 1
	if _, _, err := m.next(r); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "requires CHAP") ||
		strings.Contains(err.Error(), "rejected our CHAP credentials") {
		t.Fatalf("authentication failure without CHAP configured: %v", err)
	}
	// With CHAP configured, the same status means our credentials were wrong.
	m = newLoginMachine(loginSetup{InitiatorName: "iqn.i", TargetName: "iqn.t", CHAP: chap})
	m.first()
	if _, _, err := m.next(r); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "rejected our CHAP credentials") {
		t.Fatalf("authentication failure with CHAP configured: %v", err)
	}
	// A target that demands CHAP when we have no credentials.
	m = newLoginMachine(loginSetup{InitiatorName: "iqn.i", TargetName: "iqn.t"})
	m.first()
	if _, _, err := m.next(resp(0, 1, false, kv{"AuthMethod", "CHAP"})); !errors.Is(err, ErrAuth) {
		t.Fatalf("CHAP demanded without credentials: %v", err)
	}
	// Stage confusion.
	m = newLoginMachine(loginSetup{InitiatorName: "iqn.i", TargetName: "iqn.t"})
	m.first()
	if _, _, err := m.next(resp(1, 3, true)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("response in the wrong stage: %v", err)
	}
}
