package heartbeat

import (
	"os"
	"path/filepath"
	"strings"
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
