// Package packaging holds no Go code to import: it is where hamirror's
// install is tested. Its tests run the Makefile the way a person or a
// package builder does and check the result:
//
//	make install DESTDIR=/tmp/x PREFIX=/opt/hamirror   # TestMakeInstallLaysOutTheTree
//	make deb                                           # TestDebInstallsIntoAThrowawayRoot
//
// The .deb (packaging/deb: control file and maintainer scripts) is
// installed with dpkg --root into a temporary root that holds a busybox
// shell and a stand-in systemctl that records its calls, never into the
// machine's own /. Run them with `go test ./packaging/`; the .deb test
// needs root, dpkg and busybox-static (make deps).
package packaging
