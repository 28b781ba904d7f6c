package heartbeat

import "slices"

// BuildTable makes the first index table (R7) from the configured node
// order: every node backs up to the next node in the list, the last to the
// first, so each node is the backup target of exactly one other node.
func BuildTable(order []NodeID, addrs map[NodeID][]string, coordinator NodeID, version uint64) Table {
	t := Table{Version: version, Coordinator: coordinator}
	for _, id := range order {
		t.Rows = append(t.Rows, Row{ID: id, Addresses: slices.Clone(addrs[id])})
	}
	t.ring()
	return t
}

// Clone returns a deep copy.
func (t Table) Clone() Table {
	c := t
	c.Rows = make([]Row, len(t.Rows))
	for i, r := range t.Rows {
		r.Addresses = slices.Clone(r.Addresses)
		c.Rows[i] = r
	}
	return c
}

// Row returns the row of id.
func (t Table) Row(id NodeID) (Row, bool) {
	if i := t.index(id); i >= 0 {
		return t.Rows[i], true
	}
	return Row{}, false
}

func (t Table) index(id NodeID) int {
	for i, r := range t.Rows {
		if r.ID == id {
			return i
		}
	}
	return -1
}

func (t *Table) setTarget(i int, target NodeID) {
	t.Rows[i].BackupTarget, t.Rows[i].BackupAddr = target, ""
	if j := t.index(target); j >= 0 && len(t.Rows[j].Addresses) > 0 {
		t.Rows[i].BackupAddr = t.Rows[j].Addresses[0]
	}
}

// ring points every Normal node at the next Normal node in table order.
// Failed rows keep their target: it holds their data (R10).
func (t *Table) ring() {
	var normal []int
	for i, r := range t.Rows {
		if r.State == Normal {
			normal = append(normal, i)
		}
	}
	for k, i := range normal {
		target := NodeID("")
		if len(normal) > 1 {
			target = t.Rows[normal[(k+1)%len(normal)]].ID
		}
		t.setTarget(i, target)
	}
}

// Fail marks id Failed and re-assigns as R9 says: every node that backed
// up to id now backs up to id's own backup target (skipping targets that
// are themselves Failed or the node itself). It reports whether the table
// changed; the caller bumps the version and sends it to every node.
func (t *Table) Fail(id NodeID) bool {
	x := t.index(id)
	if x < 0 || t.Rows[x].State == Failed {
		return false
	}
	t.Rows[x].State = Failed
	for i := range t.Rows {
		if i == x || t.Rows[i].State == Failed || t.Rows[i].BackupTarget != id {
			continue
		}
		next := t.Rows[x].BackupTarget
		for range t.Rows { // follow the chain past Failed nodes
			j := t.index(next)
			if j < 0 || t.Rows[j].State == Normal {
				break
			}
			next = t.Rows[j].BackupTarget
		}
		if next == t.Rows[i].ID {
			next = "" // the only Normal node left: nobody to back up to
		}
		t.setTarget(i, next)
	}
	return true
}

// Rejoin marks a Failed node Normal again and rebuilds the ring over the
// Normal nodes, which restores the original assignment once all are back.
func (t *Table) Rejoin(id NodeID) bool {
	x := t.index(id)
	if x < 0 || t.Rows[x].State == Normal {
		return false
	}
	t.Rows[x].State = Normal
	t.ring()
	return true
}
