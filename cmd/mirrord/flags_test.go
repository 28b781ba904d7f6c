package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512K": 512 << 10, "10M": 10 << 20, "1G": 1 << 30, "10MiB/s": 10 << 20, "4096": 4096} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "fast", "-1M", "1X"} {
		if _, err := parseRate(bad); err == nil {
			t.Errorf("parseRate(%q) accepted", bad)
		}
	}
}

func TestVolumeFlagErrorsAreActionable(t *testing.T) {
	cases := map[string][]string{
		"exactly two legs": {"volume", "--leg", "/a", "--listen", "unix:/tmp/x"},
		"nothing to serve": {"volume", "--leg", "/a", "--leg", "/b"},
		"must be 0 or 1":   {"volume", "--leg", "/a", "--leg", "/b", "--listen", "unix:/x", "--keep-leg", "2"},
		"is not a rate":    {"volume", "--leg", "/a", "--leg", "/b", "--listen", "unix:/x", "--resync-min-rate", "lots"},
	}
	for want, args := range cases {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %v, want it to say %q", args, err, want)
		}
	}
}
