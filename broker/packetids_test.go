package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/broker"
)

// The client and the broker number their QoS flows each in a space of its
// own (MQTT 5 §2.2.1). An owner's app has two readings in flight to it,
// unacknowledged, with packet ids 1 and 2, when it sends a QoS 1 command;
// paho numbers it 2 (its SUBSCRIBE took 1). The readings are still resent
// when the session resumes, after a reconnection and after a restart.
// Upstream mochi kept both directions under one packet id: the command
// ended the second reading's delivery, which was never resent; and Veil's
// state store, told the command's flow was complete, deleted the reading's
// record under the same key.
func TestDeliveryOutlivesTheClientsFlowOfItsPacketID(t *testing.T) {
	readings := []string{`{"temperature":21.37}`, `{"temperature":22.44}`}
	for _, restart := range []bool{false, true} {
		name := "reconnect"
		if restart {
			name = "restart"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			clk := &testClock{}
			clk.Set(time.Now().UTC())
			b := startWithClock(t, dir, clk)
			defer func() { b.Close() }()
			app := twoReadingsInFlight(t, b, readings)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pr, err := app.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/cmd/calibrate", QoS: 1, Payload: []byte(`{}`)})
			if err != nil || pr.ReasonCode != 0 {
				t.Fatalf("command: %v %v", pr, err)
			}
			_ = app.Disconnect(&paho.Disconnect{})
			if restart {
				b.Close()
				b = startWithClock(t, dir, clk)
			}
			_, got := persistentSession(t, b.Addr("mqtt"), "an-app", "an", "an-pass", false)
			expect(t, "resumed", got, readings)
		})
	}
}

// The app's own QoS 2 PUBLISH with packet id 2 has waited for its PUBREL
// longer than mochi's maximum message expiry (a day) when the reading with
// packet id 2 is in flight to it: the PUBREC's expiry ends the app's flow,
// not the reading, which is still resent after a restart. (Upstream mochi
// reported the expiry a second time by packet id alone, and the state
// store, taking it for the delivery's, deleted the reading's record.)
func TestDeliveryOutlivesTheExpiryOfTheClientsFlowOfItsPacketID(t *testing.T) {
	readings := []string{`{"temperature":21.37}`, `{"temperature":22.44}`}
	dir := t.TempDir()
	clk := &testClock{}
	clk.Set(time.Now().UTC())
	b := startWithClock(t, dir, clk)
	defer func() { b.Close() }()
	app := twoReadingsInFlight(t, b, readings)

	cl, ok := b.MQTT.Clients.Get("an-app")
	if !ok {
		t.Fatal("no session an-app")
	}
	if _, sent := cl.State.Inflight.Get(2); !sent {
		t.Fatal("the second reading is not in flight with packet id 2")
	}
	// The PUBREC mochi answered the app's QoS 2 PUBLISH with id 2 with, two
	// days ago (the app never sent its PUBREL).
	cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 2,
		Created: time.Now().Unix() - 2*24*3600})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, waiting := cl.State.Inflight.GetReceived(2); !waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the app's flow never expired")
		}
	}
	if _, sent := cl.State.Inflight.Get(2); !sent {
		t.Fatal("the second reading expired with the app's flow")
	}
	_ = app.Disconnect(&paho.Disconnect{})
	b.Close()
	b = startWithClock(t, dir, clk)
	_, got := persistentSession(t, b.Addr("mqtt"), "an-app", "an", "an-pass", false)
	expect(t, "resumed after a restart", got, readings)
}

// twoReadingsInFlight connects an's app to its persistent session "an-app"
// on b, subscribes it at QoS 1 to thermo-1's temperature and has thermo-1
// publish the two readings, which the app receives and does not
// acknowledge: in flight with packet ids 1 and 2.
func twoReadingsInFlight(t *testing.T, b *broker.Broker, readings []string) *paho.Client {
	t.Helper()
	const topic = "things/thermo-1/data/temperature"
	app, got := persistentSession(t, b.Addr("mqtt"), "an-app", "an", "an-pass", true) // not acknowledged
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if sa, err := app.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("subscription: %v %v", sa, err)
	}
	publishAs(t, b.Addr("mqtt"), "thermo-1", [2]string{topic, readings[0]}, [2]string{topic, readings[1]})
	expect(t, "published", got, readings)
	return app
}
