package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The peer knowledge that lets a takeover trust a lone leg is kept for
// one peer (one record, one acknowledgement): with a third node, each
// standby's record flips between the two others' knowledge at every
// step, an acknowledgement of one node's sequence passes for another's,
// and a stopped node's old knowledge can prove a stale leg newest. A
// cluster file with a volume and more than two nodes is refused, naming
// the key.
func TestVolumeNeedsExactlyTwoNodes(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(key, []byte("a-test-cluster-key-of-enough-bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := func(nodes int) string {
		var b strings.Builder
		for i := range nodes {
			fmt.Fprintf(&b, "  - id: n%d\n    links: [{medium: nic1, address: 127.0.0.%d}]\n", i+1, i+1)
		}
		path := filepath.Join(dir, fmt.Sprintf("%d.yaml", nodes))
		text := fmt.Sprintf(`
cluster: {name: three, key_file: %s, port: 7000, state_dir: %s}
nodes:
%svolume:
  legs: [iscsi://127.0.0.1:3260/iqn.2026-01.org.test:a/1, iscsi://127.0.0.1:3260/iqn.2026-01.org.test:b/1]
  listen: [unix:/run/test.sock]
resources:
  - {name: app, type: exec, start: "true", stop: "true", monitor: "true"}
`, key, dir, b.String())
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	if _, err := LoadConfig(file(2), "n1"); err != nil {
		t.Fatalf("two nodes with a volume: %v", err)
	}
	_, err := LoadConfig(file(3), "n1")
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "volume" {
		t.Fatalf("three nodes with a volume: %v, want an error naming the volume key", err)
	}
}
