package peers

import (
	"context"
	"encoding/xml"
	"fmt"
	"sort"
	"strings"
)

// crmStatus is what crm_mon --output-as=xml says about nodes and the group.
type crmStatus struct {
	dc      string // the DC's name, "" when there is none
	online  map[string]bool
	pending map[string]bool // joining, not yet a full member
	unclean map[string]bool // lost and not fenced yet
	// where maps each group resource to the nodes it is started on.
	where map[string][]string
}

type crmMonXML struct {
	DC struct {
		Present string `xml:"present,attr"`
		Name    string `xml:"name,attr"`
	} `xml:"summary>current_dc"`
	Nodes []struct {
		Name    string `xml:"name,attr"`
		Online  string `xml:"online,attr"`
		Pending string `xml:"pending,attr"`
		Unclean string `xml:"unclean,attr"`
	} `xml:"nodes>node"`
	Groups []struct {
		ID        string        `xml:"id,attr"`
		Resources []crmResource `xml:"resource"`
	} `xml:"resources>group"`
}

type crmResource struct {
	ID    string `xml:"id,attr"`
	Role  string `xml:"role,attr"`
	Nodes []struct {
		Name string `xml:"name,attr"`
	} `xml:"node"`
}

// groupMembers are the group's resources, in start order.
func groupMembers() []string { return []string{"fs", "vip", "db"} }

// parseCrmMon decodes crm_mon's XML.
func parseCrmMon(b []byte) (*crmStatus, error) {
	var x crmMonXML
	if err := xml.Unmarshal(b, &x); err != nil {
		return nil, fmt.Errorf("crm_mon output: %w", err)
	}
	st := &crmStatus{online: map[string]bool{}, pending: map[string]bool{}, unclean: map[string]bool{}, where: map[string][]string{}}
	if x.DC.Present == "true" {
		st.dc = x.DC.Name
	}
	for _, n := range x.Nodes {
		st.online[n.Name] = n.Online == "true"
		st.pending[n.Name] = n.Pending == "true"
		st.unclean[n.Name] = n.Unclean == "true"
	}
	for _, g := range x.Groups {
		if g.ID != "g" {
			continue
		}
		for _, r := range g.Resources {
			if r.Role != "Started" {
				continue
			}
			for _, n := range r.Nodes {
				st.where[r.ID] = append(st.where[r.ID], n.Name)
			}
		}
	}
	return st, nil
}

// groupOn names the node every group member is started on, or "".
func (st *crmStatus) groupOn() string {
	node := ""
	for _, r := range groupMembers() {
		w := st.where[r]
		if len(w) != 1 || (node != "" && w[0] != node) {
			return ""
		}
		node = w[0]
	}
	return node
}

// settled says whether there is a DC and both nodes are online members.
func (st *crmStatus) settled() bool {
	return st.dc != "" && st.online["n1"] && st.online["n2"] && !st.pending["n1"] && !st.pending["n2"]
}

func (st *crmStatus) String() string {
	var on []string
	for n, ok := range st.online {
		if ok {
			on = append(on, n)
		}
	}
	sort.Strings(on)
	var rs []string
	for _, r := range groupMembers() {
		rs = append(rs, fmt.Sprintf("%s on %v", r, st.where[r]))
	}
	return fmt.Sprintf("DC %q; online %v; %s", st.dc, on, strings.Join(rs, ", "))
}

// status runs crm_mon on node id.
func (p *Pacemaker) status(ctx context.Context, id string) (*crmStatus, error) {
	cmd, err := p.Lab.Node(id).Command(ctx, "crm_mon", "-1", "--output-as=xml")
	if err != nil {
		return nil, err
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: crm_mon: %w", id, err)
	}
	return parseCrmMon(out)
}
