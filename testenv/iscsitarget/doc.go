// Package iscsitarget provides iSCSI test arrays for hamirror's initiator
// and mirror tests: a real tgtd on loopback (its own portal and control
// port, started, paused, killed, restarted and torn down by helpers), and
// gotgt embedded in-process over a backing store that can delay, fail or
// hang on command.
//
//	t, err := iscsitarget.StartTgtd(dir)
//	t.AddTarget(1, "iqn.2026-01.test:a", []string{dir + "/a.img"}, "")
//	disk, err := iscsi.OpenLeg(ctx, "iscsi://"+t.Portal+"/iqn.2026-01.test:a/1", iscsi.Config{})
//	t.Kill(); t.Restart()
//	t.Stop()
//
// In a test, StartArray does all of that for one LUN and cleans up:
//
//	a := iscsitarget.StartArray(t, t.TempDir(), "array-a", 8<<20) // a.URL, a.Img, a.Kill()...
package iscsitarget
