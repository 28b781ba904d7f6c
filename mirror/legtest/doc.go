// Package legtest holds in-memory legs for tests of the mirror engine and
// its frontends. They are FAKES, used only for what real parts cannot do:
//
//   - MemLeg: a RAM disk, so thousands of test I/Os need no file system.
//   - CrashLeg: remembers what was flushed (or written with FUA) and, at a
//     power cut, keeps for every unflushed sector a seeded random choice
//     of its durable or one of its newer contents — a disk with a
//     volatile write cache.
//   - FaultLeg: wraps any leg and fails or hangs its Nth read, write or
//     flush, or fails reads of a bad range — a real disk cannot be told to
//     fail on its Nth I/O.
//
// The types implement mirror.Leg (this package does not import mirror, so
// mirror's own tests can use it):
//
//	a, b := legtest.NewMemLeg("a", 64<<20), legtest.NewMemLeg("b", 64<<20)
//	fb := legtest.NewFaultLeg(b)
//	fb.FailNth(legtest.OpWrite, 3, errors.New("medium error"))
//	mirror.Create([2]mirror.Leg{a, fb}, mirror.CreateOptions{})
package legtest
