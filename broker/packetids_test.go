package broker_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
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
	const topic = "things/thermo-1/data/temperature"
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
			app, got := ownerSession(t, b.Addr("mqtt"), true) // not acknowledged
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if sa, err := app.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
				t.Fatalf("subscription: %v %v", sa, err)
			}
			publishAs(t, b.Addr("mqtt"), "thermo-1", [2]string{topic, readings[0]}, [2]string{topic, readings[1]})
			expect(t, "published", got, readings)

			pr, err := app.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/cmd/calibrate", QoS: 1, Payload: []byte(`{}`)})
			if err != nil || pr.ReasonCode != 0 {
				t.Fatalf("command: %v %v", pr, err)
			}
			_ = app.Disconnect(&paho.Disconnect{})
			if restart {
				b.Close()
				b = startWithClock(t, dir, clk)
			}
			_, got = ownerSession(t, b.Addr("mqtt"), false)
			expect(t, "resumed", got, readings)
		})
	}
}

// ownerSession connects an to the persistent session "an-app" at addr,
// acknowledging what it receives unless manualAcks, and returns the client
// and the payloads it receives.
func ownerSession(t *testing.T, addr string, manualAcks bool) (*paho.Client, chan string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 100)
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, EnableManualAcknowledgment: manualAcks,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- string(pr.Packet.Payload)
			return true, nil
		}}})
	expiry := uint32(3600)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "an-app", KeepAlive: 30, Username: "an", UsernameFlag: true,
		Password: []byte("an-pass"), PasswordFlag: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
	return pc, got
}
