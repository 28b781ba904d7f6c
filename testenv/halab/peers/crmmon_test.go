package peers

import (
	"os"
	"strings"
	"testing"
)

func TestParseCrmMonFindsOnlineNodesAndWhereTheGroupRuns(t *testing.T) {
	// crm_mon -1 --output-as=xml of Pacemaker 2.1.5 in the lab, the group
	// on n1, n2 the DC.
	b, err := os.ReadFile("testdata/crm_mon.xml")
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseCrmMon(b)
	if err != nil {
		t.Fatal(err)
	}
	if !st.online["n1"] || !st.online["n2"] || st.groupOn() != "n1" || st.dc != "n2" || !st.settled() {
		t.Fatalf("got %s, want a settled cluster, DC n2, the group on n1", st)
	}
	// A node still joining, or no DC yet: not settled.
	joining := strings.Replace(string(b), `online="true" standby="false" standby_onfail="false" maintenance="false" pending="false"`,
		`online="true" standby="false" standby_onfail="false" maintenance="false" pending="true"`, 1)
	if st, err := parseCrmMon([]byte(joining)); err != nil || st.settled() {
		t.Fatalf("a pending node read as settled (%v)", err)
	}
	noDC := strings.Replace(string(b), `<current_dc present="true"`, `<current_dc present="false"`, 1)
	if st, err := parseCrmMon([]byte(noDC)); err != nil || st.settled() {
		t.Fatalf("no DC read as settled (%v)", err)
	}
	// The group half moved: no single node runs it.
	half := strings.Replace(string(b), `<resource id="db" resource_agent="ocf:heartbeat:pgsql" role="Started"`,
		`<resource id="db" resource_agent="ocf:heartbeat:pgsql" role="Stopped"`, 1)
	if st, err := parseCrmMon([]byte(half)); err != nil || st.groupOn() != "" {
		t.Fatalf("db stopped: groupOn %q (%v), want none", st.groupOn(), err)
	}
	offline := strings.Replace(string(b), `<node name="n2" id="2" online="true"`, `<node name="n2" id="2" online="false"`, 1)
	if st, err := parseCrmMon([]byte(offline)); err != nil || st.online["n2"] {
		t.Fatalf("n2 offline read as online (%v)", err)
	}
	if st.unclean["n1"] || st.unclean["n2"] {
		t.Fatalf("got %s: a clean node read as unclean", st)
	}
	lost := strings.Replace(offline, `<node name="n2" id="2" online="false" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false"`,
		`<node name="n2" id="2" online="false" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="true"`, 1)
	if st, err := parseCrmMon([]byte(lost)); err != nil || !st.unclean["n2"] {
		t.Fatalf("n2 lost and not fenced yet read as clean (%v)", err)
	}
	if _, err := parseCrmMon([]byte("<pacemaker-result><nodes>")); err == nil {
		t.Fatal("truncated XML accepted")
	}
}
