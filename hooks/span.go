package hooks

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// PublishSpan times a sample of publishes inside the broker, from the
// first OnPublish hook to OnPublished: the hooks' work on the message,
// mochi's matching of subscribers, every delivery's ACL check, copy and
// queueing. It runs the same with enforcement on or off, so the two
// brokers' spans compare what enforcement adds to the time before a
// delivery is queued without the load generator, the network and the
// subscriber's scheduling in the way. Add it before every other hook that
// handles OnPublish.
type PublishSpan struct {
	mqtt.HookBase
	// Observe receives spans in seconds (a Prometheus histogram fits).
	Observe func(seconds float64)
	// SampleEvery times one publish in this many (0: 8).
	SampleEvery uint64

	started sync.Map // *mqtt.Client → spanStart of its publish being timed
}

type spanStart struct {
	at      time.Time
	payload []byte // which publish: a refused one never reaches OnPublished
}

// ID names the hook.
func (h *PublishSpan) ID() string { return "veil-publish-span" }

// Provides lists the events timed.
func (h *PublishSpan) Provides(b byte) bool { return spanEvents.Has(b) }

var spanEvents = Events(mqtt.OnPublish, mqtt.OnPublished, mqtt.OnDisconnect)

// OnPublish starts timing a sampled publish.
func (h *PublishSpan) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline && sampledOneIn(h.SampleEvery) {
		h.started.Store(cl, spanStart{at: time.Now(), payload: pk.Payload})
	}
	return pk, nil
}

// OnPublished records the span of a timed publish.
func (h *PublishSpan) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	v, ok := h.started.Load(cl)
	if !ok {
		return
	}
	h.started.Delete(cl)
	// A client's publishes are processed one after another: another
	// payload means the timed publish was refused before OnPublished.
	if s := v.(spanStart); sameBytes(s.payload, pk.Payload) {
		h.Observe(time.Since(s.at).Seconds())
	}
}

// OnDisconnect forgets a timed publish the client's connection ended with.
func (h *PublishSpan) OnDisconnect(cl *mqtt.Client, err error, expire bool) { h.started.Delete(cl) }
