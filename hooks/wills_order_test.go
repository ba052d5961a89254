package hooks

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/veil-iot/veil/policies"
)

// TestDelayedWillAndTakeoverInEitherOrder: the will of a connection whose
// session a new connection takes over is cancelled (the session resumed)
// or due now (a clean start), whichever of the will and the new
// connection's establish comes first; it is never held past the
// takeover. mochi may end the old connection, and with it call OnWill,
// while the new one is being established.
func TestDelayedWillAndTakeoverInEitherOrder(t *testing.T) {
	for _, clean := range []bool{false, true} {
		var held, dueNow, taken, sent atomic.Int32
		for range 500 {
			var w delayedWills
			var latest sync.Map
			old := &mqtt.Client{ID: "dev"}
			cur := &mqtt.Client{ID: "dev"}
			cur.Properties.Clean = clean
			newer := func() *mqtt.Client {
				if c, ok := latest.Load("dev"); ok && c != old {
					return c.(*mqtt.Client)
				}
				return nil
			}
			var wg sync.WaitGroup
			wg.Add(2)
			var fate willFate
			go func() {
				defer wg.Done()
				fate = w.holdUnlessTaken(old, policies.UserPrincipal("doctor"), mqtt.Will{TopicName: "t"}, time.Hour,
					func(*delayedWill) { sent.Add(1) }, newer)
			}()
			var d *delayedWill
			go func() {
				defer wg.Done()
				d = w.establish("dev", func() { latest.Store("dev", cur) })
			}()
			wg.Wait()
			switch {
			case fate == willHeld && d != nil:
				taken.Add(1) // held first, then taken by the new connection
			case fate == willHeld:
				held.Add(1)
			case fate == willDueNow:
				dueNow.Add(1)
			}
			if fate == willDropped && clean || fate == willDueNow && !clean {
				t.Fatalf("clean start %v: fate %v", clean, fate)
			}
			if w.takeNow("dev") != nil {
				t.Fatalf("clean start %v: a will still held after the takeover", clean)
			}
		}
		if held.Load() != 0 || sent.Load() != 0 {
			t.Fatalf("clean start %v: %d wills held past the takeover, %d sent by their timer", clean, held.Load(), sent.Load())
		}
		t.Logf("clean start %v: taken after being held %d times, due now %d times", clean, taken.Load(), dueNow.Load())
	}
}
