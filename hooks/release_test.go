package hooks_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
)

// TestFinishedClientsAreFreed checks that nothing of Veil's keeps a mochi
// client alive once mochi has let go of it: each holds a 64 KB outbound
// queue, so a reference kept per connection leaks that much per connection
// (and the garbage collector scans it every cycle). mochi calls hooks for a
// client after OnDisconnect (OnUnsubscribed as it drops the client's
// subscriptions), which used to re-create the session record keyed by it.
func TestFinishedClientsAreFreed(t *testing.T) {
	for _, tc := range []struct {
		name string
		// expiry is the session expiry the doctor asks for; 0 ends the
		// session with the connection, else the doctor reconnects and its
		// second connection takes the session over.
		expiry  uint32
		publish bool
		enforce bool
	}{
		{name: "clean session, connect and disconnect", enforce: true},
		{name: "clean session with deliveries", publish: true, enforce: true},
		{name: "persistent session taken over by a reconnect", expiry: 3600, publish: true, enforce: true},
		{name: "plain mochi, for comparison", publish: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr, _ := startServer(t, tc.enforce)
			clientOf := func(id string, not *mqtt.Client) *mqtt.Client {
				t.Helper()
				for range 200 {
					if c, ok := srv.Clients.Get(id); ok && c != not {
						return c
					}
					time.Sleep(5 * time.Millisecond)
				}
				t.Fatalf("client %s not found", id)
				return nil
			}
			var freed []*atomic.Bool
			watch := func(cl *mqtt.Client) {
				f := new(atomic.Bool)
				runtime.AddCleanup(cl, func(f *atomic.Bool) { f.Store(true) }, f)
				freed = append(freed, f)
			}

			doc := &counter{}
			sub := dialSession(t, addr, "doc", "doctor", "doctor", tc.expiry, doc)
			subscribe(t, sub, "things/thermo-1/data/temperature")
			pub := dialSession(t, addr, "thermo-1", "thermo-1", "thermo-1", 0, nil)
			first := clientOf("doc", nil)
			watch(first)
			watch(clientOf("thermo-1", nil))
			if tc.publish {
				for range 5 {
					if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "things/thermo-1/data/temperature", Payload: []byte(`{"temperature":21.37}`)}); err != nil {
						t.Fatal(err)
					}
				}
				waitAll(t, 5, []*counter{doc})
			}
			_ = pub.Disconnect(&paho.Disconnect{})
			_ = sub.Disconnect(&paho.Disconnect{})
			if tc.expiry > 0 {
				again := dialSession(t, addr, "doc", "doctor", "doctor", tc.expiry, nil)
				clientOf("doc", first)
				_ = again.Disconnect(&paho.Disconnect{})
			}
			first = nil

			deadline := time.Now().Add(5 * time.Second)
			for {
				runtime.GC()
				n := 0
				for _, f := range freed {
					if f.Load() {
						n++
					}
				}
				if n == len(freed) {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d finished clients still reachable", len(freed)-n, len(freed))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
