// Package thindisk gives tests a real file system on a thin-provisioned
// disk whose pool can run out: writes into the page cache succeed, and
// fsync then fails with ENOSPC (a SAN's thin LUN, a sparse image file, an
// LVM thin pool). It is ext2 on a loop device over a sparse image on a
// small tmpfs (the pool).
//
// The mounts live in a private mount namespace held by a helper process
// (unshare), so that no other program's `ip netns exec` or `unshare -m`
// copies them and keeps them busy; the test reaches the file system
// through /proc/PID/root. Needs root, unshare, losetup and mkfs.ext2.
//
//	d := thindisk.New(t)       // fails t, naming what is missing, if it cannot run
//	l, _ := mlog.Open(mlog.Options{Dir: d.Dir, ...})
//	d.Fill(t)                  // the pool is full: the next fsync fails
//	d.Free(t)                  // space again
package thindisk
