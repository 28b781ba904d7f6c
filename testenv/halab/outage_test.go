package halab

import (
	"errors"
	"testing"
	"time"
)

// at builds attempts from (start ms, end ms, ok) triples after t0.
func attempts(t0 time.Time, spec ...[3]int) []Attempt {
	var as []Attempt
	for i, s := range spec {
		a := Attempt{Start: t0.Add(time.Duration(s[0]) * time.Millisecond), End: t0.Add(time.Duration(s[1]) * time.Millisecond), ID: int64(i)}
		if s[2] == 0 {
			a.Err = errors.New("failed")
		}
		as = append(as, a)
	}
	return as
}

func TestComputeOutage(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, tc := range []struct {
		name           string
		as             []Attempt
		fault, applied int
		ok             bool
		dur, f2s       time.Duration
		failures       int
	}{
		{"gap from the last success to the first success after the failures",
			attempts(t0, [3]int{0, 5, 1}, [3]int{15, 20, 1}, [3]int{30, 130, 0}, [3]int{140, 240, 0}, [3]int{250, 260, 1}),
			25, 27, true, ms(240), ms(235), 2},
		{"a failure before the fault is not the fault's outage",
			attempts(t0, [3]int{0, 5, 0}, [3]int{15, 20, 1}, [3]int{30, 40, 0}, [3]int{50, 60, 1}),
			22, 24, true, ms(40), ms(38), 1},
		{"an attempt in flight at the fault that failed after it counts",
			attempts(t0, [3]int{0, 5, 1}, [3]int{10, 110, 0}, [3]int{120, 125, 1}),
			50, 52, true, ms(120), ms(75), 1},
		{"an attempt in flight at the fault that succeeded does not end the outage",
			attempts(t0, [3]int{0, 5, 1}, [3]int{10, 60, 1}, [3]int{70, 170, 0}, [3]int{180, 190, 1}),
			50, 55, true, ms(130), ms(140), 1},
		{"a success that started while the fault was being applied does not end it",
			attempts(t0, [3]int{0, 5, 1}, [3]int{10, 20, 1}, [3]int{30, 130, 0}, [3]int{140, 150, 1}),
			8, 25, true, ms(130), ms(142), 1},
		{"not over while no success followed the failures",
			attempts(t0, [3]int{0, 5, 1}, [3]int{10, 110, 0}),
			50, 52, false, 0, 0, 0},
		{"a fault the client never noticed is the gap between two commits",
			attempts(t0, [3]int{0, 5, 1}, [3]int{10, 15, 1}),
			7, 8, true, ms(10), ms(8), 0},
		{"nothing after the fault yet",
			attempts(t0, [3]int{0, 5, 1}),
			7, 8, false, 0, 0, 0},
		{"failures from the very first attempt start the outage at that attempt",
			attempts(t0, [3]int{10, 60, 0}, [3]int{70, 80, 1}),
			0, 1, true, ms(70), ms(80), 1},
	} {
		o, ok := ComputeOutage(tc.as, t0.Add(time.Duration(tc.fault)*time.Millisecond), t0.Add(time.Duration(tc.applied)*time.Millisecond))
		if ok != tc.ok || o.Duration != tc.dur || o.FaultToService != tc.f2s || o.Failures != tc.failures {
			t.Errorf("%s: got ok=%v %+v, want ok=%v duration %v fault-to-service %v failures %d",
				tc.name, ok, o, tc.ok, tc.dur, tc.f2s, tc.failures)
		}
	}
}

func TestSummarise(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := Summarise(ds)
	if s.N != 100 || s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond {
		t.Fatalf("got %+v", s)
	}
}
