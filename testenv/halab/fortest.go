package halab

import (
	"context"
	"testing"
	"time"
)

// ForTest builds a lab for t, or fails t naming what is missing (Available
// and each of needs, such as PGAvailable), and closes the lab when t ends;
// a Close that leaves something behind fails t.
func ForTest(t testing.TB, opt Options, needs ...func() error) *Lab {
	t.Helper()
	for _, need := range append([]func() error{Available}, needs...) {
		if err := need(); err != nil {
			t.Fatalf("the failover lab cannot run here: %v", err)
		}
	}
	if opt.Logf == nil {
		opt.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := New(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	return l
}
