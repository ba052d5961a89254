package hooks_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// A message queued for an offline session whose payload the owner's new
// view withholds is not resent, and the messages after it are: mochi gives
// up a resend, and closes the connection, at the first packet the encode
// hook refuses, so each such message cost the subscriber a reconnection.
func TestResendSkipsPayloadsTheViewNowWithholds(t *testing.T) {
	e := policies.NewEngine(policies.Options{Secret: []byte("test")})
	must(t, e.PutUser(policies.User{Name: "an"}))
	must(t, e.PutUser(policies.User{Name: "doctor", Attributes: policies.Attributes{"role": "doctor"}}))
	must(t, e.PutThing(policies.Thing{ID: "s-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature"}}))
	creds := hooks.NewCredentials()
	for name, secret := range map[string]string{"user:doctor": "doctor", "thing:s-1": "s-1"} {
		h, err := argon2id.CreateHash(secret, fastHash)
		must(t, err)
		creds.Set(name, h)
	}
	doctor := policies.Policy{ID: "doctor", Priority: 10, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead}}
	must(t, e.PutPolicy("an", doctor))
	_, addr, _ := serve(t, e, creds)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	doc := dialSession(t, addr, "doc-r", "doctor", "doctor", 600, nil)
	if _, err := doc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/s-1/data/temperature", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	_ = doc.Disconnect(&paho.Disconnect{})
	time.Sleep(200 * time.Millisecond)

	pub := dialCounting(t, addr, "s-1", "s-1", "s-1", nil)
	for _, p := range []string{`{"temperature":45}`, `{"temperature":21}`, `{"temperature":46}`, `{"temperature":22}`} {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "things/s-1/data/temperature", QoS: 1, Payload: []byte(p)}); err != nil {
			t.Fatal(err)
		}
	}
	// While the doctor is away, the owner lets them see temperatures up to
	// 30 only: the two fevers queued for them are withheld now.
	low, high := 0.0, 30.0
	doctor.Constraints = []policies.Constraint{{Kind: "range", Field: "temperature", Min: &low, Max: &high}}
	must(t, e.PutPolicy("an", doctor))

	got := make(chan string, 10)
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	back := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			got <- string(pr.Packet.Payload)
			return true, nil
		}}})
	exp := uint32(600)
	ca, err := back.Connect(ctx, &paho.Connect{ClientID: "doc-r", Username: "doctor", UsernameFlag: true,
		Password: []byte("doctor"), PasswordFlag: true, CleanStart: false, KeepAlive: 60,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Disconnect(&paho.Disconnect{})
	if !ca.SessionPresent {
		t.Fatal("the doctor's session was not resumed")
	}
	// The connection stays up: a message published now arrives after the
	// resent ones.
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "things/s-1/data/temperature", QoS: 1, Payload: []byte(`{"temperature":23}`)}); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"temperature":21}`, `{"temperature":22}`, `{"temperature":23}`}
	for i, w := range want {
		select {
		case p := <-got:
			if p != w {
				t.Fatalf("delivery %d: got %s, want %s", i+1, p, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("delivery %d (%s) never came", i+1, w)
		}
	}
	select {
	case p := <-got:
		t.Errorf("unexpected delivery %s", p)
	case <-time.After(200 * time.Millisecond):
	}
}
