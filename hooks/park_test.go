package hooks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/policies"
)

// TestParkedWildcardsFollowGrants: wildcard subscriptions of a user who may
// read nothing stay out of mochi's index (no work per message), and the
// first message after a grant reaches them.
func TestParkedWildcardsFollowGrants(t *testing.T) {
	e, creds := household(t)
	srv, addr, _ := serve(t, e, creds)
	const topic = "things/thermo-1/data/temperature"
	var strangers []*counter
	for i := range 2 {
		c := &counter{}
		subscribe(t, dialCounting(t, addr, fmt.Sprintf("stranger-%d", i), "stranger", "stranger", c), "things/+/data/#")
		strangers = append(strangers, c)
	}
	owner := &counter{}
	subscribe(t, dialCounting(t, addr, "an-1", "an", "an", owner), "things/+/data/#") // an owns thermo-1: never parked
	matched := func() (n int) {
		for id := range srv.Topics.Subscribers(topic).Subscriptions {
			if id != "an-1" {
				n++
			}
		}
		return n
	}
	if n := matched(); n != 0 {
		t.Fatalf("%d strangers' subscriptions are matched; want them parked", n)
	}
	pub := dialCounting(t, addr, "thermo-1", "thermo-1", "thermo-1", nil)
	publish := func(i int) {
		t.Helper()
		payload := fmt.Sprintf(`{"temperature":21.%02d,"seq":%d}`, i, i)
		if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: topic, Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	publish(1)
	waitAll(t, 1, []*counter{owner})

	// A grant: the very next message reaches both strangers.
	p, err := policies.ParsePolicy([]byte(`{"id":"share-thermo","priority":2,"effect":"allow","subjects":["user:stranger"],
		"resources":["things/thermo-1/data/temperature"],"actions":["read"]}`))
	must(t, err)
	must(t, e.PutPolicy("an", p))
	publish(2)
	waitAll(t, 1, strangers)
	time.Sleep(100 * time.Millisecond)
	for i, c := range strangers {
		if n, last := c.n.Load(), c.last.Load(); n != 1 || last != `{"temperature":21.02,"seq":2}` {
			t.Fatalf("stranger %d: %d messages, last %v; want only the one after the grant", i, n, last)
		}
	}
	if n := matched(); n != 2 {
		t.Fatalf("%d strangers' subscriptions matched after the grant, want 2", n)
	}

	// Revoked again: the subscriptions stay matched, every delivery is denied.
	e.DeletePolicy("an", "share-thermo")
	publish(3)
	waitAll(t, 3, []*counter{owner})
	time.Sleep(100 * time.Millisecond)
	for i, c := range strangers {
		if n := c.n.Load(); n != 1 {
			t.Fatalf("stranger %d received %d messages after the revocation", i, n)
		}
	}
}
