package hooks

import (
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/policies"
)

type settableClock struct{ ns atomic.Int64 }

func (c *settableClock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *settableClock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *settableClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

const memoTopic = "things/sensor-1/data/temperature"

// encode runs OnPacketEncode for a delivery of payload on memoTopic to cl,
// and returns what would be written, or false when nothing would.
func encode(h *Enforcer, cl *mqtt.Client, payload string) (string, bool) {
	out := h.OnPacketEncode(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: memoTopic, Payload: []byte(payload)})
	return string(out.Payload), out.FixedHeader.Type == packets.Publish
}

// The write loop keeps its last decision; a change of the configuration
// or of the topic, and a decision that ends at a time, must still be
// decided anew for the very next delivery.
func TestEncodeDecisionFollowsChangesAndTime(t *testing.T) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 26, 17, 59, 0, 0, time.UTC))
	f := newDeliveryFixture(t, clock)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	want := func(step, payload, got string, ok bool, wantOK bool) {
		t.Helper()
		if ok != wantOK || (wantOK && got != payload) {
			t.Fatalf("%s: encoded %q, delivered %v; want %q, %v", step, got, ok, payload, wantOK)
		}
	}
	got, ok := encode(h, doctor, `{"temperature":21.37}`)
	want("allowed", `{"temperature":21.4}`, got, ok, true)
	got, ok = encode(h, doctor, `{"temperature":21.31}`)
	want("allowed again", `{"temperature":21.3}`, got, ok, true)

	deny := doctorTemperature
	deny.Effect, deny.Constraints = "deny", nil
	if err := f.engine.PutPolicy("an", deny); err != nil {
		t.Fatal(err)
	}
	got, ok = encode(h, doctor, `{"temperature":21.37}`)
	want("after the deny", "", got, ok, false)
	if err := f.engine.PutPolicy("an", doctorTemperature); err != nil {
		t.Fatal(err)
	}
	got, ok = encode(h, doctor, `{"temperature":21.37}`)
	want("allowed once more", `{"temperature":21.4}`, got, ok, true)

	// Until 18:00 only: the decision ends at a time, so it is never kept.
	until18 := doctorTemperature
	until18.When = &policies.Condition{Attr: "env.hour", Op: policies.OpLt, Value: 18.0}
	if err := f.engine.PutPolicy("an", until18); err != nil {
		t.Fatal(err)
	}
	got, ok = encode(h, doctor, `{"temperature":21.37}`)
	want("at 17:59", `{"temperature":21.4}`, got, ok, true)
	clock.Add(2 * time.Minute)
	got, ok = encode(h, doctor, `{"temperature":21.37}`)
	want("at 18:01, nothing else changed", "", got, ok, false)
}

// A fan-out asks the engine once per principal and purpose: subscribers
// of one principal that declared different purposes on CONNECT must each
// get their own answer, whoever is asked first, and a denied principal
// must stay denied for every one of its subscribers.
func TestFanoutDecisionsPerPrincipalAndPurpose(t *testing.T) {
	f := newDeliveryFixture(t, nil)
	forDiagnosis := doctorTemperature
	forDiagnosis.Purposes = []string{"diagnosis"}
	if err := f.engine.PutPolicy("an", forDiagnosis); err != nil {
		t.Fatal(err)
	}
	h := f.enforcer
	sensor := f.client("sensor-1", policies.ThingPrincipal("sensor-1"))
	withPurpose := func(id, purpose string) *mqtt.Client {
		cl := f.client(id, policies.UserPrincipal("doctor"))
		f.sessions.put(cl, newSession(policies.UserPrincipal("doctor"), false, purpose))
		return cl
	}
	type sub struct {
		cl      *mqtt.Client
		allowed bool
	}
	var subs []sub
	for i := range 3 {
		subs = append(subs,
			sub{withPurpose("diagnosing-"+string(rune('a'+i)), "diagnosis"), true},
			sub{withPurpose("curious-"+string(rune('a'+i)), ""), false},
			sub{f.client("stranger-"+string(rune('a'+i)), policies.UserPrincipal("stranger")), false})
	}
	for round, order := range [][]int{{0, 1, 2, 3, 4, 5, 6, 7, 8}, {8, 7, 6, 5, 4, 3, 2, 1, 0}, {1, 4, 7, 0, 3, 6, 2, 5, 8}} {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: memoTopic, Payload: []byte(`{"temperature":21.37}`)}
		if !h.OnACLCheck(sensor, memoTopic, true) {
			t.Fatal("the sensor may not publish its own reading")
		}
		if _, err := h.OnPublish(sensor, pk); err != nil {
			t.Fatal(err)
		}
		for _, i := range order {
			if got := h.OnACLCheck(subs[i].cl, memoTopic, false); got != subs[i].allowed {
				t.Fatalf("round %d, subscriber %d (%s): allowed = %v, want %v", round, i, subs[i].cl.ID, got, subs[i].allowed)
			}
		}
		h.OnPublished(sensor, pk)
	}
}
