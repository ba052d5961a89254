package broker_test

import (
	"testing"
	"time"

	"github.com/veil-iot/veil/policies"
)

// TestRateLimitedSubscriber: under a rate constraint a subscriber gets the
// first reading of each period; the others are withheld from it entirely,
// while the owner gets every one.
func TestRateLimitedSubscriber(t *testing.T) {
	p, err := policies.ParsePolicy([]byte(`{"id":"doctor-hr-hourly","priority":1,"effect":"allow","subjects":["user:doctor"],
		"resources":["things/watch-1/data/heart_rate"],"actions":["read"],"constraints":[{"kind":"rate","seconds":3600}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := veil.Engine.PutPolicy("an", p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { veil.Engine.DeletePolicy("an", p.ID); clock.Set(evening) })
	// A rate releases the first reading of each hour the stream took: a
	// day of its own, so that no other test's reading came first.
	day := evening.Add(7 * 24 * time.Hour)
	clock.Set(day)

	an := connect(t, "an", "an-pass", connOpts{})
	doc := connect(t, "doctor", "doctor-pass", connOpts{})
	an.mustSubscribe("", "things/watch-1/data/heart_rate")
	doc.mustSubscribe("", "things/watch-1/data/heart_rate")
	watch := connect(t, "watch-1", "watch-1-secret", connOpts{clientID: "watch-1"})
	for i, bpm := range []string{"61", "62", "63"} {
		watch.publish("things/watch-1/data/heart_rate", `{"bpm":`+bpm+`}`, false)
		if m := an.next(); m.payload != `{"bpm":`+bpm+`}` {
			t.Fatalf("owner message %d: %s", i, m.payload)
		}
	}
	if m := doc.next(); m.payload != `{"bpm":61}` {
		t.Fatalf("doctor got %s first", m.payload)
	}
	doc.nothing(quiet)
	clock.Set(day.Add(time.Hour))
	watch.publish("things/watch-1/data/heart_rate", `{"bpm":70}`, false)
	if m := doc.next(); m.payload != `{"bpm":70}` {
		t.Fatalf("doctor after the period got %s", m.payload)
	}
}
