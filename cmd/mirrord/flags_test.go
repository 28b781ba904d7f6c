package main

import (
	"bytes"
	"strings"
	"testing"
)

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
