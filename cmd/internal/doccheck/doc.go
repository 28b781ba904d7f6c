// Package doccheck keeps the operator documentation honest: it finds the
// mirrorctl and mirrord command lines and the cluster-file keys that the
// Markdown documents name, so that tests can check each against the real
// cobra command tree and the real config loader. It is used by tests only
// (cmd/mirrorctl/docs_test.go, cmd/mirrord/docs_test.go):
//
//	md, _ := os.ReadFile("../../docs/OPERATIONS.md")
//	for _, c := range doccheck.Commands("OPERATIONS.md", md, "mirrorctl") {
//		if err := doccheck.Check(newRootCmd(), c); err != nil {
//			t.Errorf("%s: %v", c, err)
//		}
//	}
//	for _, k := range doccheck.Keys("OPERATIONS.md", md, sections) { ... probe k.Path ... }
//
// A command line in a fenced code block (any block but ```text, which
// holds output) is checked strictly: the subcommand must exist, every flag
// must be known with its value given, and the positional arguments must
// satisfy the command's Args rule. A command in an inline code span
// (`mirrorctl cleanup [NAME]`) is a reference in prose: only its
// subcommand path and flag names are checked. Shell syntax is split the
// simple way a person writes these lines: quotes, backslash continuations,
// comments, and |, ||, &&, ; and & between commands.
//
// Keys are inline code spans of the form section.key, section.key.sub or
// list[].key (`volume.io_timeout`, `nodes[].serial`, `resources[].fsck`)
// whose first part is a section of the cluster file, and every key path of
// a ```yaml block. File names that look like keys (cluster.yaml,
// cluster.key) are not keys.
package doccheck
