package hooks_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestReceiveMaximumDoesNotWedgeTheBroker: a v5 subscriber that sets
// Receive Maximum gets a QoS 1 stream published from several goroutines at
// once, with enforcement on and off. Plain mochi v2.7.9 honouring that
// Receive Maximum called Inflight.NextImmediate, which took the in-flight
// map's read lock twice, after every packet of the subscriber; a
// publisher's Inflight.Set in between stopped the subscriber and the
// publisher for good (within a second here). third_party/mochi's patch 0003
// keeps the send quota under one lock.
func TestReceiveMaximumDoesNotWedgeTheBroker(t *testing.T) {
	for _, enforce := range []bool{true, false} {
		t.Run(fmt.Sprintf("enforcement %v", enforce), func(t *testing.T) {
			_, addr, _ := startServer(t, enforce)
			got := &counter{}
			receiveMax := uint16(100)
			sub := dialSession(t, addr, "an-flow", "an", "an", 0, got, func(cp *paho.Connect) {
				if cp.Properties == nil {
					cp.Properties = &paho.ConnectProperties{}
				}
				cp.Properties.ReceiveMaximum = &receiveMax
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/thermo-1/data/temperature", QoS: 1}}}); err != nil {
				t.Fatal(err)
			}
			pub := dialCounting(t, addr, "thermo-1", "thermo-1", "thermo-1", nil)
			const publishers, each = 8, 1000
			errs := make(chan error, publishers)
			var wg sync.WaitGroup
			for p := range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_, err := pub.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", QoS: 1,
							Payload: []byte(fmt.Sprintf(`{"temperature":21.5,"p":%d,"i":%d}`, p, i))})
						cancel()
						if err != nil {
							errs <- fmt.Errorf("publisher %d, message %d: %w", p, i, err)
							return
						}
					}
				}()
			}
			const want = publishers * each
			last, since := int64(-1), time.Now()
			for got.n.Load() < want {
				if n := got.n.Load(); n != last {
					last, since = n, time.Now()
				} else if time.Since(since) > 5*time.Second {
					t.Fatalf("deliveries stopped at %d of %d", n, want)
				}
				time.Sleep(10 * time.Millisecond)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
