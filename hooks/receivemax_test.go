package hooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestReceiveMaximumIsHonoured: a subscriber with Receive Maximum 3 that
// does not acknowledge gets three QoS 1 messages and no more
// ([MQTT-3.3.4-9]); each acknowledgement lets exactly one more go, in
// order, until all have arrived; with enforcement on and off. The messages
// held back are written through the encode hook like any other: the doctor
// gets each temperature rounded.
func TestReceiveMaximumIsHonoured(t *testing.T) {
	for _, enforce := range []bool{true, false} {
		t.Run(fmt.Sprintf("enforcement %v", enforce), func(t *testing.T) {
			_, addr, _ := startServer(t, enforce)
			const receiveMax, total = 3, 20
			got := make(chan *paho.Publish, 100)
			conn, err := net.Dial("tcp", addr)
			must(t, err)
			sub := paho.NewClient(paho.ClientConfig{Conn: conn, EnableManualAcknowledgment: true, SendAcksInterval: 5 * time.Millisecond,
				OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
					got <- pr.Packet
					return true, nil
				}}})
			rm := uint16(receiveMax)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := sub.Connect(ctx, &paho.Connect{ClientID: "doctor-rm", Username: "doctor", UsernameFlag: true,
				Password: []byte("doctor"), PasswordFlag: true, CleanStart: true, KeepAlive: 60,
				Properties: &paho.ConnectProperties{ReceiveMaximum: &rm}}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Disconnect(&paho.Disconnect{}) })
			if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/thermo-1/data/temperature", QoS: 1}}}); err != nil {
				t.Fatal(err)
			}
			pub := dialCounting(t, addr, "thermo-1", "thermo-1", "thermo-1", nil)
			for i := range total {
				if _, err := pub.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", QoS: 1,
					Payload: []byte(fmt.Sprintf(`{"temperature":21.37,"i":%d}`, i))}); err != nil {
					t.Fatal(err)
				}
			}

			next := 0
			var unacked []*paho.Publish
			receive := func(wait time.Duration) bool {
				t.Helper()
				select {
				case pk := <-got:
					var m struct {
						Temperature float64
						I           int
					}
					if err := json.Unmarshal(pk.Payload, &m); err != nil {
						t.Fatalf("payload %s: %v", pk.Payload, err)
					}
					if m.I != next {
						t.Fatalf("message %d arrived when %d was due", m.I, next)
					}
					if want := map[bool]float64{true: 21.4, false: 21.37}[enforce]; m.Temperature != want {
						t.Errorf("message %d: temperature %v, want %v", m.I, m.Temperature, want)
					}
					next++
					unacked = append(unacked, pk)
					if len(unacked) > receiveMax {
						t.Fatalf("%d unacknowledged QoS 1 PUBLISH packets, Receive Maximum %d", len(unacked), receiveMax)
					}
					return true
				case <-time.After(wait):
					return false
				}
			}
			for range receiveMax {
				if !receive(5 * time.Second) {
					t.Fatalf("%d of %d messages before any acknowledgement", next, receiveMax)
				}
			}
			if receive(300 * time.Millisecond) {
				t.Fatal("unreachable")
			}
			for next < total {
				must(t, sub.Ack(unacked[0]))
				unacked = unacked[1:]
				if !receive(5 * time.Second) {
					t.Fatalf("stalled after %d of %d messages", next, total)
				}
				if next < total && receive(30*time.Millisecond) {
					t.Fatal("unreachable")
				}
			}
			for _, pk := range unacked {
				must(t, sub.Ack(pk))
			}
		})
	}
}
