package hooks

import (
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/veil-iot/veil/policies"
)

// willOutcome is what became of a delayed will of the first connection:
// held for its delay, cancelled, or due now.
type willOutcome string

// lateWill gives the will of old to w, and says what became of it.
func lateWill(w *delayedWills, old *mqtt.Client) willOutcome {
	switch w.holdUnlessTaken(old, policies.UserPrincipal("doctor"), mqtt.Will{TopicName: "t"}, time.Hour, func(*delayedWill) {}) {
	case willDropped:
		return "cancelled"
	case willDueNow:
		return "due now"
	}
	return "held"
}

// TestDelayedWillDecidedByTheTakeover: the will of a connection whose
// session a new connection takes over is decided by that takeover — the
// first one after it — whether it comes before the takeover (held, then
// taken) or after it, however many connections followed and whether they
// ended: a resumed session cancels it [MQTT-3.1.3-9], a clean start ended
// the session and makes it due now. (mochi may stop the old connection,
// whose will comes as it ends, long before its will reaches the hooks.)
// Once every connection ended, nothing of them is kept.
func TestDelayedWillDecidedByTheTakeover(t *testing.T) {
	type step struct {
		conn  int  // 0 is the first connection, whose will is decided
		clean bool // for an establish
		end   bool // the connection ends (after its own will)
	}
	for _, tc := range []struct {
		name  string
		after []step // after the first connection's establish, before its will
		want  willOutcome
	}{
		{"no takeover", nil, "held"},
		{"resumed", []step{{conn: 1}}, "cancelled"},
		{"started clean", []step{{conn: 1, clean: true}}, "due now"},
		{"resumed, and that connection ended", []step{{conn: 1}, {conn: 1, end: true}}, "cancelled"},
		{"resumed, then started clean", []step{{conn: 1}, {conn: 2, clean: true}}, "cancelled"},
		{"started clean, then resumed", []step{{conn: 1, clean: true}, {conn: 2}}, "due now"},
		{"started clean, ended, then resumed", []step{{conn: 1, clean: true}, {conn: 1, end: true}, {conn: 2}}, "due now"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w delayedWills
			conns := []*mqtt.Client{{ID: "dev"}, {ID: "dev"}, {ID: "dev"}}
			w.establish(conns[0], false)
			for _, s := range tc.after {
				if s.end {
					w.ended(conns[s.conn])
				} else if d := w.establish(conns[s.conn], s.clean); d != nil {
					t.Fatalf("a will taken before the first connection's will came")
				}
			}
			if got := lateWill(&w, conns[0]); got != tc.want {
				t.Fatalf("the will came after the takeover: %s, want %s", got, tc.want)
			}
			for _, c := range conns {
				w.ended(c)
			}
			if len(w.holder) != 0 || len(w.takenBy) != 0 {
				t.Fatalf("kept after every connection ended: %d holders, %d taken over", len(w.holder), len(w.takenBy))
			}
		})
	}
	// The will first: held, then taken by the next connection to
	// establish, which cancels it or sends it now (OnSessionEstablish).
	t.Run("will before the takeover", func(t *testing.T) {
		var w delayedWills
		old, cur := &mqtt.Client{ID: "dev"}, &mqtt.Client{ID: "dev"}
		w.establish(old, false)
		if got := lateWill(&w, old); got != "held" {
			t.Fatalf("the will before any takeover: %s, want held", got)
		}
		if w.establish(cur, false) == nil {
			t.Fatal("the takeover did not take the will held")
		}
	})
}

// TestDelayedWillAndTakeoverInEitherOrder: racing the will of a connection
// with the establish of the connection that takes its session over, the
// will is never left held past the takeover, in either order.
func TestDelayedWillAndTakeoverInEitherOrder(t *testing.T) {
	for _, clean := range []bool{false, true} {
		t.Run(fmt.Sprintf("clean start %v", clean), func(t *testing.T) {
			orders := map[string]int{}
			for range 500 {
				var w delayedWills
				old, cur := &mqtt.Client{ID: "dev"}, &mqtt.Client{ID: "dev"}
				w.establish(old, false)
				var wg sync.WaitGroup
				wg.Add(2)
				var outcome willOutcome
				var taken *delayedWill
				go func() {
					defer wg.Done()
					outcome = lateWill(&w, old)
				}()
				go func() {
					defer wg.Done()
					taken = w.establish(cur, clean)
				}()
				wg.Wait()
				switch {
				case outcome == "held" && taken != nil:
					orders["will first"]++
				case outcome == "held":
					t.Fatal("a will held past the takeover")
				case outcome == "due now" && clean, outcome == "cancelled" && !clean:
					orders["takeover first"]++
				default:
					t.Fatalf("the will %s", outcome)
				}
				if w.takeNow("dev") != nil {
					t.Fatal("a will still held after the takeover")
				}
			}
			t.Logf("%v", orders)
		})
	}
}
