package hooks

import (
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

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

// Under a rate-only view a delivery is written as published, properties
// and all, but only if it is a reading (a JSON object), as under any
// constraint: also when the fan-out could not judge its payload (the
// message had left the table of fan-outs), or judged another one.
func TestRateOnlyViewWritesReadingsOnly(t *testing.T) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	f := hourlyDoctor(t, clock)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	for _, c := range []struct {
		payload string
		written bool
	}{
		{`{"temperature":21.37}`, true},
		{`21.37`, false},
		{`{"temperature":21.37,"temperature":99}`, false},
	} {
		pk := queuedPk(memoTopic, 0, false)
		pk.FixedHeader.Qos, pk.Payload = 0, []byte(c.payload)
		pk.Properties.User = []packets.UserProperty{{Key: "unit", Val: "C"}}
		out := h.OnPacketEncode(doctor, pk)
		written := out.FixedHeader.Type == packets.Publish
		if written != c.written {
			t.Errorf("%s: written %v, want %v", c.payload, written, c.written)
		}
		if written && (string(out.Payload) != c.payload || len(out.Properties.User) != 1) {
			t.Errorf("%s: written as %q with user properties %v, want as published", c.payload, out.Payload, out.Properties.User)
		}
	}
}
