// SPDX-License-Identifier: MIT

package mqtt

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// A message carries the identifiers of the subscriptions it was sent for,
// and none when they have none ([MQTT-3.3.4-3], [MQTT-3.3.4-4]): whether
// they came gathered from overlapping subscriptions or as one subscription.
func TestPublishToClientSubscriptionIdentifiers(t *testing.T) {
	tt := []struct {
		name string
		sub  packets.Subscription
		want []int
	}{
		{"lone, none", packets.Subscription{Filter: "a/b/c"}, nil},
		{"lone, as gathered by v2.7.9", packets.Subscription{Filter: "a/b/c", Identifiers: map[string]int{"a/b/c": 0}}, nil},
		{"lone, with one", packets.Subscription{Filter: "a/b/c", Identifier: 3}, []int{3}},
		{"overlapping", packets.Subscription{Filter: "a/b/c", Identifier: 5, Identifiers: map[string]int{"a/b/c": 5, "a/#": 0, "#": 2}}, []int{2, 5}},
		{"overlapping, none", packets.Subscription{Filter: "a/b/c", Identifiers: map[string]int{"a/b/c": 0, "a/#": 0}}, nil},
	}
	for _, tc := range tt {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer()
			cl, _, _ := newTestClient()
			cl.Properties.ProtocolVersion = 5
			pk := *packets.TPacketData[packets.Publish].Get(packets.TPublishBasic).Packet
			pk.Properties.SubscriptionIdentifier = []int{9} // a client may not send one ([MQTT-3.3.4-6]): never passed on
			out, err := s.publishToClient(cl, tc.sub, pk)
			require.NoError(t, err)
			require.Equal(t, tc.want, out.Properties.SubscriptionIdentifier)
		})
	}
}

// The subscribers of a topic carry a map of identifiers only for a client
// whose matching subscriptions have one, or overlap: a publish to
// subscriptions without identifiers makes no map per subscriber.
func TestSubscribersGatherIdentifiersOnlyWhenThereAreAny(t *testing.T) {
	index := NewTopicsIndex()
	index.Subscribe("plain", packets.Subscription{Filter: "a/b/c"})
	index.Subscribe("numbered", packets.Subscription{Filter: "a/+/c", Identifier: 4})
	index.Subscribe("overlapping", packets.Subscription{Filter: "a/b/c"})
	index.Subscribe("overlapping", packets.Subscription{Filter: "a/#", Identifier: 6})
	subs := index.Subscribers("a/b/c")
	require.Nil(t, subs.Subscriptions["plain"].Identifiers)
	require.Equal(t, map[string]int{"a/+/c": 4}, subs.Subscriptions["numbered"].Identifiers)
	require.Equal(t, map[string]int{"a/b/c": 0, "a/#": 6}, subs.Subscriptions["overlapping"].Identifiers)
	for id, want := range map[string][]int{"plain": nil, "numbered": {4}, "overlapping": {6}} {
		require.Equal(t, want, subscriptionIdentifiers(subs.Subscriptions[id]), id)
	}
}

// sentRecorder keeps the PUBLISH packets written to clients.
type sentRecorder struct {
	HookBase
	mu   sync.Mutex
	sent []packets.Packet
}

func (h *sentRecorder) Provides(b byte) bool { return b == OnPacketSent }

func (h *sentRecorder) OnPacketSent(cl *Client, pk packets.Packet, b []byte) {
	if pk.FixedHeader.Type == packets.Publish {
		h.mu.Lock()
		h.sent = append(h.sent, pk)
		h.mu.Unlock()
	}
}

func (h *sentRecorder) published() []packets.Packet {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]packets.Packet(nil), h.sent...)
}

// A retained message sent as a client subscribes carries the identifier of
// that subscription, as any message published as the result of it does
// ([MQTT-3.3.4-3]; v2.7.9 sent it without).
func TestRetainedMessageCarriesTheSubscriptionIdentifier(t *testing.T) {
	s := newServer()
	rec := new(sentRecorder)
	require.NoError(t, s.AddHook(rec, nil))
	r, w := net.Pipe()
	defer r.Close()
	go func() { _, _ = io.Copy(io.Discard, r) }()
	cl := s.NewClient(w, "tcp", "subscriber", false)
	cl.Properties.ProtocolVersion = 5
	go cl.WriteLoop()
	defer cl.Stop(nil)

	s.Topics.RetainMessage(*packets.TPacketData[packets.Publish].Get(packets.TPublishRetainMqtt5).Packet)
	sub := packets.Subscription{Filter: "a/b/c", Identifier: 7}
	require.True(t, s.Topics.Subscribe(cl.ID, sub))
	s.publishRetainedToClient(cl, sub, false)

	require.Eventually(t, func() bool { return len(rec.published()) == 1 }, time.Second, time.Millisecond)
	require.Equal(t, []int{7}, rec.published()[0].Properties.SubscriptionIdentifier)
}
