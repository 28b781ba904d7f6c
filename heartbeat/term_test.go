package heartbeat

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestTermFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if got, err := LoadTerm(dir); got != 0 || err != nil {
		t.Fatalf("no term file: %d %v, want 0", got, err)
	}
	for _, want := range []uint64{1, 7, 1 << 40} {
		if err := SaveTerm(dir, want); err != nil {
			t.Fatal(err)
		}
		if got, err := LoadTerm(dir); got != want || err != nil {
			t.Fatalf("term %d read back as %d (%v)", want, got, err)
		}
	}
	for _, bad := range []string{"garbage", "-1", "", "9223372036854775807"} {
		os.WriteFile(filepath.Join(dir, termFile), []byte(bad), 0o644)
		if _, err := LoadTerm(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("term file %q: %v", bad, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left behind in the state dir: %v", ents)
	}
}

// TestMemberRecordsTheTermBeforeUsingIt: on the real runner, a node
// records every term it claims or learns in its state_dir before it
// reports the claim (or sends it); restarted on the same state_dir it
// starts from the highest it had seen, not from scratch. A term that
// cannot be recorded raises an alarm, and the node goes on.
func TestMemberRecordsTheTermBeforeUsingIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newMemNet()
		c := memConfig()
		c.Disks = nil
		dirs := map[string]string{"n1": t.TempDir(), "n2": t.TempDir()}
		recorded := func(id string) uint64 {
			v, err := LoadTerm(dirs[id])
			if err != nil {
				t.Error(err)
			}
			return v
		}
		var atClaim []uint64 // n2's recorded term when it reported each claim
		start := func(id string) *runningMember {
			return startMemWith(t, c, net, nil, id, MemberOptions{StateDir: dirs[id], OnEvent: func(e Event) {
				if id == "n2" && e.Kind == EventRole && e.To == "active" {
					atClaim = append(atClaim, recorded("n2"))
				}
			}})
		}
		n1, n2 := start("n1"), start("n2")
		time.Sleep(time.Second)
		synctest.Wait()
		if n1.Status().Term != 1 || recorded("n1") != 1 || recorded("n2") != 1 {
			t.Fatalf("n1 active in term %d; recorded n1 %d, n2 %d; want 1 everywhere", n1.Status().Term, recorded("n1"), recorded("n2"))
		}
		n1.stop()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if st := n2.Status(); st.Role != "active" || st.Term != 2 || len(atClaim) != 1 || atClaim[0] != 2 {
			t.Fatalf("n2 took over: role %s term %d; recorded when it reported the claim %v, want [2]", st.Role, st.Term, atClaim)
		}
		n2.stop()
		n2 = start("n2")
		defer n2.stop()
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if st := n2.Status(); st.Term != 2 || st.Role == "active" {
			t.Errorf("restarted n2: term %d (role %s), want 2 from its state_dir", st.Term, st.Role)
		}

		// A state_dir that cannot be written: n1 comes back, learns term 2
		// from n2 and, elected (it ranks first), claims term 3; neither
		// can be recorded, and alarms say so each time.
		n1 = startMemWith(t, c, net, nil, "n1", MemberOptions{StateDir: dirs["n1"]})
		defer n1.stop()
		if err := os.RemoveAll(dirs["n1"]); err != nil { // the state_dir goes: a file takes its place
			t.Fatal(err)
		}
		if err := os.WriteFile(dirs["n1"], nil, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		var alarms []string
		n1.mu.Lock()
		for _, e := range n1.events {
			if e.Kind == EventAlarm && strings.Contains(e.Msg, "in memory, but after a restart") {
				alarms = append(alarms, e.Msg)
			}
		}
		n1.mu.Unlock()
		if st := n1.Status(); len(alarms) != 2 || !strings.Contains(alarms[0], "term 2") || !strings.Contains(alarms[1], "term 3") ||
			st.Role != "active" || st.Term != 3 {
			t.Errorf("n1 with a broken state_dir: role %s term %d, alarms %q", st.Role, st.Term, alarms)
		}
	})
}

// TestMemberShowsNoTermBeforeItIsRecorded: the resources layer polls View
// and acts on the role and term it shows (it fences and starts); a term
// it can see must be in state_dir already, or a crash after acting and
// before the fsync would restart with the earlier term and claim the
// same one again. Real time, not a synctest bubble: a reader waits on the
// member's mutex, which a bubble does not count as blocked.
func TestMemberShowsNoTermBeforeItIsRecorded(t *testing.T) {
	net := newMemNet()
	c := memConfig()
	c.Disks = nil
	dir := t.TempDir()
	c.Self = "n1"
	m, err := NewMember(c, simKey, []Link{net.attach("n1", "nic1")}, MemberOptions{StateDir: dir, Logf: func(string, ...any) {}})
	if err != nil {
		t.Fatal(err)
	}
	saving := make(chan uint64, 1)
	var once sync.Once
	m.saveTerm = func(dir string, term uint64) error {
		once.Do(func() {
			saving <- term
			time.Sleep(300 * time.Millisecond) // a slow fsync: readers must not see the term meanwhile
		})
		return SaveTerm(dir, term)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	n2 := startMemWith(t, c, net, nil, "n2", MemberOptions{})
	defer n2.stop()

	var term uint64
	select {
	case term = <-saving:
	case <-time.After(30 * time.Second):
		t.Fatal("n1 recorded no term: it never claimed the active role")
	}
	v := m.View()
	recorded, err := LoadTerm(dir)
	if err != nil {
		t.Fatal(err)
	}
	if v.Role != RoleActive || v.Term != term {
		t.Fatalf("n1 is %s in term %d, want active in term %d (the claim it was recording)", v.Role, v.Term, term)
	}
	if recorded < v.Term {
		t.Errorf("View showed n1 active in term %d while state_dir still said %d: a crash now would forget the claim", v.Term, recorded)
	}
	if st := m.Status(); st.Term > recorded {
		t.Errorf("Status showed term %d while state_dir said %d", st.Term, recorded)
	}
}
