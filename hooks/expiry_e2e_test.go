package hooks_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
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

// mochi expires a session just as a new connection under its client id
// arrives: the new connection has passed OnSessionEstablish, but not yet
// looked the session up. The expired session's filters leave mochi's
// index all the same (the new connection then finds no session), or they
// would deliver to it unasked (a review found them left there).
func TestExpiryDuringAConnectionsArrivalUnsubscribes(t *testing.T) {
	srv, addr, enf := startServer(t, true)
	const topic = "things/thermo-1/data/temperature"
	doc := dialSession(t, addr, "doc-arriving", "doctor", "doctor", 3600, nil)
	subscribe(t, doc, topic)
	_ = doc.Disconnect(&paho.Disconnect{})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, ok := srv.Clients.Get("doc-arriving"); ok && c.StopTime() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	A, _ := srv.Clients.Get("doc-arriving")
	B := srv.NewClient(nil, "t", "doc-arriving", false)
	B.Properties.ProtocolVersion = 5
	enf.OnSessionEstablish(B, packets.Packet{Connect: packets.ConnectParams{Clean: true}}) // h.latest = B
	// mochi's clearExpiredClients, for A, before B's inheritClientSession:
	enf.OnClientExpired(A)
	srv.Clients.Delete("doc-arriving")
	// B's inheritClientSession now finds no session: nothing unsubscribes A's filters.
	if _, ok := srv.Topics.Subscribers(topic).Subscriptions["doc-arriving"]; ok {
		t.Errorf("expired session's subscription to %s still in mochi's index under doc-r8: the new session B gets its deliveries", topic)
	}
}
