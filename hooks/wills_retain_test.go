package hooks

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/veil-iot/veil/policies"
)

// A will that would retain a command is never sent, though its client may
// send the command (the owner here): refused at CONNECT, it is dropped
// when due too, immediate or delayed (not held), and a held one is not
// published when due.
func TestRetainedCommandWillNeverSent(t *testing.T) {
	f := newDeliveryFixture(t, nil)
	f.enforcer.metrics = NewMetrics()
	const topic = "things/sensor-1/cmd/reset"
	owner := policies.UserPrincipal("an")
	for _, c := range []struct {
		retain bool
		delay  uint32
		want   string
	}{
		{true, 0, droppedWillTopic},
		{true, 5, droppedWillTopic},
		{false, 0, topic},
	} {
		cl := f.client("an-will", owner)
		cl.Properties.Will.WillDelayInterval = c.delay
		cl.Properties.Props.SessionExpiryInterval = 60
		w, err := f.enforcer.OnWill(cl, mqtt.Will{TopicName: topic, Payload: []byte(`{}`), Retain: c.retain})
		if err != nil || w.TopicName != c.want || w.Retain && w.TopicName == topic {
			t.Errorf("will (retain %v, delay %d s): sent to %q retain %v (%v), want %q", c.retain, c.delay, w.TopicName, w.Retain, err, c.want)
		}
		if d := f.enforcer.wills.takeNow("an-will"); d != nil {
			t.Errorf("will (retain %v, delay %d s) held for later", c.retain, c.delay)
		}
	}
	if n := f.enforcer.metrics.Snapshot()["will_refused"]; n != 2 {
		t.Errorf("will_refused = %d after OnWill, want 2", n)
	}
	// A held will that would retain a command (held by a broker that let
	// one through) is refused when due, not published.
	f.enforcer.sendDelayedWill(&delayedWill{who: owner, will: mqtt.Will{TopicName: topic, Payload: []byte(`{}`), Retain: true}})
	if n := f.enforcer.metrics.Snapshot()["will_refused"]; n != 3 {
		t.Errorf("will_refused = %d after a retained command was due, want 3", n)
	}
}
