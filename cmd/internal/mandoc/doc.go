// Package mandoc gives mirrord and mirrorctl a hidden `man DIR` command
// that writes their manual pages (section 8, one per command, from the
// commands' own help through cobra/doc), so `make install` and the .deb
// ship man pages that say exactly what --help says:
//
//	root.AddCommand(mandoc.Command())
//	// mirrorctl man /usr/share/man/man8  →  mirrorctl.8, mirrorctl-status.8, ...
//
// Hidden commands get no page; a root that keeps `completion` out of its
// pages sets CompletionOptions.HiddenDefaultCmd. SOURCE_DATE_EPOCH sets
// the pages' date (reproducible builds).
package mandoc
