package hooks_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// An expired session's subscriptions go with it: mochi drops the client
// only, and a later session under the same client id would be delivered
// what the old subscriptions match without having asked.
func TestExpiredSessionTakesItsSubscriptions(t *testing.T) {
	srv, addr, _ := startServer(t, true)
	doc := dialSession(t, addr, "doc-e", "doctor", "doctor", 1, nil)
	subscribe(t, doc, "things/thermo-1/data/temperature")
	_ = doc.Disconnect(&paho.Disconnect{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := srv.Clients.Get("doc-e"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session did not expire")
		}
		time.Sleep(100 * time.Millisecond)
	}
	var got counter
	dialCounting(t, addr, "doc-e", "doctor", "doctor", &got) // a new session, no subscription
	thermo := dialCounting(t, addr, "thermo-1", "thermo-1", "thermo-1", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := thermo.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", QoS: 1, Payload: []byte(`{"temperature":21.37}`)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := got.n.Load(); n != 0 {
		t.Errorf("a new session under the expired one's client id got %d messages (last %v) it never subscribed to", n, got.last.Load())
	}
}
