package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/broker"
)

// TestReceiveMaximumResendAfterRestart: ten readings queued for the
// doctor's offline session survive a restart of the broker (Veil's state
// store); the doctor resumes the session with Receive Maximum 3 and
// acknowledges nothing at first: three are resent, then each PUBACK lets
// exactly one more go, in order, each as it was decided (rounded).
func TestReceiveMaximumResendAfterRestart(t *testing.T) {
	dir := t.TempDir()
	b := startConfigured(t, dir, broker.Defaults())
	const topic, queued, receiveMax = "things/thermo-1/data/temperature", 10, 3
	subscribeDoctor(t, b.Addr("mqtt"), topic)
	var msgs [][2]string
	for i := range queued {
		msgs = append(msgs, [2]string{topic, fmt.Sprintf(`{"temperature":21.37,"i":%d}`, i)})
	}
	publishAs(t, b.Addr("mqtt"), "thermo-1", msgs...)
	b.Close()

	b = startConfigured(t, dir, broker.Defaults())
	defer b.Close()
	conn, err := net.Dial("tcp", b.Addr("mqtt"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *paho.Publish, 100)
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, EnableManualAcknowledgment: true, SendAcksInterval: time.Millisecond,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet
			return true, nil
		}}})
	expiry, rm := uint32(3600), uint16(receiveMax)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := pc.Connect(ctx, &paho.Connect{ClientID: "doctor-restart", KeepAlive: 30, Username: "doctor", UsernameFlag: true,
		Password: []byte("doctor-pass"), PasswordFlag: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &rm}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Disconnect(&paho.Disconnect{})
	if !ca.SessionPresent {
		t.Fatal("the doctor's session was not restored")
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
			if m.I != next || m.Temperature != 21.4 {
				t.Fatalf("got %s when message %d (rounded) was due", pk.Payload, next)
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
	for next < receiveMax {
		if !receive(5 * time.Second) {
			t.Fatalf("%d of %d messages resent before any acknowledgement", next, receiveMax)
		}
	}
	if receive(300 * time.Millisecond) {
		t.Fatal("unreachable")
	}
	for next < queued {
		if err := pc.Ack(unacked[0]); err != nil {
			t.Fatal(err)
		}
		unacked = unacked[1:]
		if !receive(5 * time.Second) {
			t.Fatalf("stalled after %d of %d messages", next, queued)
		}
		if receive(30 * time.Millisecond) {
			t.Fatal("unreachable")
		}
	}
	for _, pk := range unacked {
		if err := pc.Ack(pk); err != nil {
			t.Fatal(err)
		}
	}
}
