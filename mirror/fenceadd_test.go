package mirror

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hamirror/hamirror/iscsi"
	"github.com/hamirror/hamirror/mirror/legtest"
)

// Machine rule 9 around a failed slot: a RESERVATION CONFLICT from the
// slot's own leg (re-added, or the operator's failure recorded on it)
// means another node fenced this one off that array: the volume stops
// (ErrFenced); it does not go on, on the other leg, as if the add had
// merely failed. A replacement leg the operator names is another matter
// (a LUN someone else reserved): that add is refused, the volume runs on.
func TestReservationConflictAroundAFailedSlot(t *testing.T) {
	conflict := func(op string) error { return fmt.Errorf("%s: %w", op, iscsi.ErrReservationConflict) }
	for _, how := range []string{"re-add", "leg-fail-record", "replacement"} {
		t.Run(how, func(t *testing.T) {
			p := newMemPair(t, 4<<20, 64<<10)
			v, err := Assemble(p.legs(), testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			mustWrite(t, v, fill(1), 0, false)
			switch how {
			case "re-add": // AutoReAdd's way: the slot's own leg object
				if err := v.FailLeg(1); err != nil {
					t.Fatal(err)
				}
				p.fault[1].FailFrom(legtest.OpRead, 1, conflict("READ(16)"))
				p.fault[1].FailFrom(legtest.OpWrite, 1, conflict("WRITE(16)"))
				err = v.AddLeg(1, p.fault[1])
			case "leg-fail-record":
				p.fault[1].FailFrom(legtest.OpWrite, 1, conflict("WRITE(16)"))
				err = v.FailLeg(1)
			case "replacement":
				if err := v.FailLeg(1); err != nil {
					t.Fatal(err)
				}
				other := legtest.NewFaultLeg(legtest.NewMemLeg("someone-elses", 4<<20))
				other.FailFrom(legtest.OpWrite, 1, conflict("WRITE(16)"))
				if err = v.AddLeg(1, other); !errors.Is(err, iscsi.ErrReservationConflict) {
					t.Fatalf("adding a LUN another initiator reserved: %v, want refused naming the conflict", err)
				}
				if st := v.Status(); st.State != "degraded" {
					t.Fatalf("after a refused replacement the volume is %q, want degraded (serving)", st.State)
				}
				return
			}
			t.Logf("%s: %v", how, err)
			if st := v.Status(); st.State != "fenced" {
				t.Fatalf("after a reservation conflict on %s the volume is %q (%s), want fenced", how, st.State, st.Error)
			}
			if err := v.WriteAt(fill(2), 0, false); !errors.Is(err, ErrFenced) {
				t.Fatalf("a write after the conflict: %v, want ErrFenced", err)
			}
		})
	}
}
