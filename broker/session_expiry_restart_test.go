package broker_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// A v5 session with a 2 s expiry interval, restored after a restart,
// expires 2 s after it: a review found the stored client without its
// SessionExpiryIntervalFlag, so mochi held it for its own maximum (days).
func TestSessionExpiryHoldsAfterRestart(t *testing.T) {
	dir := t.TempDir()
	clk := &testClock{}
	clk.Set(time.Now().UTC())
	b := startWithClock(t, dir, clk)
	conn, err := net.Dial("tcp", b.Addr("mqtt"))
	if err != nil {
		t.Fatal(err)
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	expiry := uint32(2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "short-expiry", KeepAlive: 30, Username: "doctor", UsernameFlag: true,
		Password: []byte("doctor-pass"), PasswordFlag: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatal(err)
	}
	if sa, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/thermo-1/data/temperature", QoS: 1}}}); err != nil || sa.Reasons[0] > 2 {
		t.Fatalf("subscribe: %v %v", sa, err)
	}
	_ = pc.Disconnect(&paho.Disconnect{})
	b.Close()
	b = startWithClock(t, dir, clk)
	defer b.Close()
	time.Sleep(4 * time.Second)
	if cl, ok := b.MQTT.Clients.Get("short-expiry"); ok {
		t.Errorf("session with a 2 s expiry still held 4 s after the restart (flag %v, interval %d)",
			cl.Properties.Props.SessionExpiryIntervalFlag, cl.Properties.Props.SessionExpiryInterval)
	}
}
