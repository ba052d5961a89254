package hooks_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

type nightClock struct{ ns atomic.Int64 }

func (c *nightClock) Now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }
func (c *nightClock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Messages queued for an offline doctor at night by many sensors at once
// (publishToClient runs on each publisher's goroutine) must all be resent
// under the night's view.
func TestConcurrentQueuedDeliveriesKeepTheirViews(t *testing.T) {
	clock := &nightClock{}
	clock.Set(time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC))
	e := policies.NewEngine(policies.Options{Secret: []byte("test"), Clock: clock})
	must(t, e.PutUser(policies.User{Name: "an"}))
	must(t, e.PutUser(policies.User{Name: "doctor", Attributes: policies.Attributes{"role": "doctor"}}))
	creds := hooks.NewCredentials()
	set := func(name, secret string) {
		h, err := argon2id.CreateHash(secret, fastHash)
		must(t, err)
		creds.Set(name, h)
	}
	set("user:doctor", "doctor")
	const n = 16
	for i := range n {
		id := fmt.Sprintf("s-%d", i)
		must(t, e.PutThing(policies.Thing{ID: id, Owner: "an", Kind: "sensor", Streams: []string{"temperature"}}))
		set("thing:"+id, id)
	}
	coarse := policies.Policy{ID: "coarse", Priority: 40, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead},
		Constraints: []policies.Constraint{{Kind: "accuracy", Field: "temperature", Step: 1}}}
	precise := policies.Policy{ID: "precise", Priority: 10, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead},
		When: &policies.Condition{Attr: "env.hour", Op: policies.OpLt, Value: 18.0}}
	must(t, e.PutPolicy("an", coarse))
	must(t, e.PutPolicy("an", precise))
	_, addr, _ := serve(t, e, creds, func(c *hooks.EnforcerConfig) { c.Clock = clock })

	doc := dialSession(t, addr, "doc-q", "doctor", "doctor", 600, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := doc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/+/data/temperature", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	_ = doc.Disconnect(&paho.Disconnect{})
	time.Sleep(200 * time.Millisecond)

	var pubs []*paho.Client
	for i := range n {
		id := fmt.Sprintf("s-%d", i)
		pubs = append(pubs, dialCounting(t, addr, id, id, id, nil))
	}
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				_, _ = p.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("things/s-%d/data/temperature", i), QoS: 1, Payload: []byte(`{"temperature":21.37}`)})
			}
		}()
	}
	wg.Wait()
	time.Sleep(300 * time.Millisecond)

	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	var total, exact atomic.Int64
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			total.Add(1)
			if string(pr.Packet.Payload) != `{"temperature":21}` {
				exact.Add(1)
			}
			return true, nil
		}}})
	exp := uint32(600)
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "doc-q", Username: "doctor", UsernameFlag: true,
		Password: []byte("doctor"), PasswordFlag: true, CleanStart: false, KeepAlive: 60,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}}); err != nil {
		t.Fatal(err)
	}
	defer pc.Disconnect(&paho.Disconnect{})
	time.Sleep(time.Second)
	t.Logf("resent %d, of which not under the night's view: %d", total.Load(), exact.Load())
	if exact.Load() > 0 {
		t.Errorf("%d of %d queued messages resent under the morning's exact view", exact.Load(), total.Load())
	}
}
