package hooks_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/hooks"
)

// refuse rejects publishes on one topic after the span hook started timing them.
type refuse struct {
	mqtt.HookBase
	topic string
}

func (r *refuse) ID() string           { return "refuse" }
func (r *refuse) Provides(b byte) bool { return b == mqtt.OnPublish }
func (r *refuse) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.TopicName == r.topic {
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

func TestPublishSpanTimesEveryDeliveredPublishOnce(t *testing.T) {
	var mu sync.Mutex
	var spans []float64
	span := &hooks.PublishSpan{SampleEvery: 1, Observe: func(s float64) { mu.Lock(); spans = append(spans, s); mu.Unlock() }}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	must(t, srv.AddHook(span, nil))
	must(t, srv.AddHook(&refuse{topic: "refused"}, nil))
	must(t, srv.AddHook(new(auth.AllowHook), nil))
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	must(t, srv.AddListener(hooks.CloseSafely(l, srv)))
	must(t, srv.Serve())
	t.Cleanup(func() { _ = srv.Close() })

	got := &counter{}
	subscribe(t, dialCounting(t, l.Address(), "sub", "u", "p", got), "a/#")
	pub := dialCounting(t, l.Address(), "pub", "u", "p", nil)
	ctx := context.Background()
	const n = 20
	for i := range n {
		if i == 10 { // timed, then refused: must not be recorded, nor spill into the next
			if _, err := pub.Publish(ctx, &paho.Publish{Topic: "refused", Payload: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "a/b", Payload: []byte("y")}); err != nil {
			t.Fatal(err)
		}
		waitAll(t, int64(i+1), []*counter{got})
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(spans) != n {
		t.Fatalf("%d spans recorded, want one per delivered publish (%d)", len(spans), n)
	}
	for _, s := range spans {
		if s <= 0 || s > 1 {
			t.Fatalf("a span of %gs", s)
		}
	}
}
