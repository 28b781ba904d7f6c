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
	if !st.online["n1"] || !st.online["n2"] || st.groupOn() != "n1" {
		t.Fatalf("got %s, want both online and the group on n1", st)
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
	if _, err := parseCrmMon([]byte("<pacemaker-result><nodes>")); err == nil {
		t.Fatal("truncated XML accepted")
	}
}
