package hooks

import (
	"fmt"
	"testing"
	"time"

	"github.com/veil-iot/veil/policies"
)

// A rate constraint holds for the requester: a second connection, or the
// same client reconnected (a new session), gets nothing more within the
// period; the next period starts when the last one ends.
func TestRateHoldsForTheRequester(t *testing.T) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	f := hourlyDoctor(t, clock)
	h := f.enforcer
	phone := f.client("doctor-phone", policies.UserPrincipal("doctor"))
	laptop := f.client("doctor-laptop", policies.UserPrincipal("doctor"))
	steps := []struct {
		step string
		to   func() bool
		want bool
	}{
		{"the phone's first", func() bool { return h.OnACLCheck(phone, memoTopic, false) }, true},
		{"the laptop, a minute later", func() bool { clock.Add(time.Minute); return h.OnACLCheck(laptop, memoTopic, false) }, false},
		{"the phone reconnected", func() bool {
			f.sessions.put(phone, newSession(policies.UserPrincipal("doctor"), false, ""))
			return h.OnACLCheck(phone, memoTopic, false)
		}, false},
		{"the laptop, an hour after the first", func() bool { clock.Add(59 * time.Minute); return h.OnACLCheck(laptop, memoTopic, false) }, true},
		{"the phone then", func() bool { return h.OnACLCheck(phone, memoTopic, false) }, false},
	}
	for _, s := range steps {
		if got := s.to(); got != s.want {
			t.Fatalf("%s: delivered = %v, want %v", s.step, got, s.want)
		}
	}
}

// The book forgets periods that ended, so it does not grow with every
// stream ever limited.
func TestRateBookForgetsEndedPeriods(t *testing.T) {
	var b rateBook
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	doctor := policies.UserPrincipal("doctor")
	for i := range 1000 {
		if !b.allow(doctor, fmt.Sprintf("things/s-%d/data/t", i), time.Second, now) {
			t.Fatalf("stream %d held back on its first delivery", i)
		}
		now = now.Add(10 * time.Millisecond)
	}
	if n := len(b.until); n > 300 {
		t.Fatalf("%d streams remembered, of which at most 100 have a running period", n)
	}
	if b.allow(doctor, "things/s-999/data/t", time.Second, now) {
		t.Fatal("a stream delivered 10 ms ago passed again")
	}
}
