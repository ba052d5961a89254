package mqtt

import (
	"bytes"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// discardConn is a net.Conn whose writes succeed and go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error)      { return len(b), nil }
func (discardConn) Close() error                     { return nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }
func (discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// benchSubscribersIndex indexes a topic matched by a handful of exact and
// wildcard subscriptions of several clients (some overlapping, so merged),
// and by subscriptions on other topics that must not match.
func benchSubscribersIndex() *TopicsIndex {
	index := NewTopicsIndex()
	index.Subscribe("cl1", packets.Subscription{Filter: "home/kitchen/temp"})
	index.Subscribe("cl1", packets.Subscription{Filter: "home/+/temp", Identifier: 3})
	index.Subscribe("cl2", packets.Subscription{Filter: "home/kitchen/temp", Qos: 1})
	index.Subscribe("cl3", packets.Subscription{Filter: "home/#"})
	index.Subscribe("cl4", packets.Subscription{Filter: "#"})
	index.Subscribe("cl5", packets.Subscription{Filter: "home/kitchen/+"})
	index.Subscribe("cl6", packets.Subscription{Filter: "home/hall/temp"})
	index.Subscribe("cl7", packets.Subscription{Filter: "work/+/temp"})
	return index
}

// BenchmarkSubscribersMatching gathers the five subscribers of a topic.
func BenchmarkSubscribersMatching(b *testing.B) {
	index := benchSubscribersIndex()
	if n := len(index.Subscribers("home/kitchen/temp").Subscriptions); n != 5 {
		b.Fatalf("%d subscribers, want 5", n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		index.Subscribers("home/kitchen/temp")
	}
}

// BenchmarkSubscribersShared adds a shared group of two to the matching topic.
func BenchmarkSubscribersShared(b *testing.B) {
	index := benchSubscribersIndex()
	index.Subscribe("cl8", packets.Subscription{Filter: SharePrefix + "/g/home/kitchen/temp", ShareName: []string{"g"}})
	index.Subscribe("cl9", packets.Subscription{Filter: SharePrefix + "/g/home/+/temp", ShareName: []string{"g"}})
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		subs := index.Subscribers("home/kitchen/temp")
		subs.SelectShared()
		subs.MergeSharedSelected()
	}
}

// BenchmarkPublishToSubscribers delivers a QoS 0 publish to the subscribers
// of benchSubscribersIndex (v5 clients) and encodes each delivery, as a
// client's write loop would: the broker's whole per-publish work after
// decoding.
func BenchmarkPublishToSubscribers(b *testing.B) {
	for _, v := range []byte{4, 5} {
		b.Run("v"+strconv.Itoa(int(v)), func(b *testing.B) {
			s := newServer()
			s.Topics = benchSubscribersIndex()
			var cls []*Client
			for i := 1; i <= 7; i++ {
				cl := s.NewClient(discardConn{}, "t", "cl"+strconv.Itoa(i), false)
				cl.Properties.ProtocolVersion = v
				s.Clients.Add(cl)
				cls = append(cls, cl)
			}
			pk := packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish},
				TopicName:   "home/kitchen/temp",
				Payload:     bytes.Repeat([]byte("x"), 128),
				Origin:      "pub",
			}
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				s.publishToSubscribers(pk)
				for _, cl := range cls {
					for len(cl.State.outbound) > 0 {
						out := <-cl.State.outbound
						atomic.AddInt32(&cl.State.outboundQty, -1)
						if err := cl.WritePacket(*out); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
		})
	}
}

// selectFirstHook picks a member of each shared group by writing to
// SharedSelected, as Veil's enforcer does.
type selectFirstHook struct{ HookBase }

func (h *selectFirstHook) ID() string { return "select-first" }

func (h *selectFirstHook) Provides(b byte) bool { return b == OnSelectSubscribers }

func (h *selectFirstHook) OnSelectSubscribers(subs *Subscribers, pk packets.Packet) *Subscribers {
	for filter, group := range subs.Shared {
		for id, sub := range group {
			subs.SharedSelected[id] = sub
			break
		}
		delete(subs.Shared, filter)
	}
	return subs
}

// TestPublishToSubscribersSelectHook delivers to a plain, a shared (chosen by
// a hook that writes SharedSelected) and an inline subscriber: the maps
// Subscribers now makes only when needed are there for the hook to write.
func TestPublishToSubscribersSelectHook(t *testing.T) {
	for _, hook := range []bool{false, true} {
		s := newServerWithInlineClient()
		if hook {
			require.NoError(t, s.AddHook(new(selectFirstHook), nil))
		}
		var cls []*Client
		for _, id := range []string{"cl1", "cl2"} {
			cl := s.NewClient(discardConn{}, "t", id, false)
			s.Clients.Add(cl)
			cls = append(cls, cl)
		}
		s.Topics.Subscribe("cl1", packets.Subscription{Filter: "a/b"})
		s.Topics.Subscribe("cl2", packets.Subscription{Filter: SharePrefix + "/g/a/+", ShareName: []string{"g"}})
		inline := 0
		require.NoError(t, s.Subscribe("a/#", 1, func(cl *Client, sub packets.Subscription, pk packets.Packet) { inline++ }))

		s.publishToSubscribers(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte("x")})
		require.Equal(t, 1, inline)
		for _, cl := range cls {
			require.Len(t, cl.State.outbound, 1, cl.ID)
		}

		// A topic with neither shared nor inline subscribers.
		s.publishToSubscribers(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "b", Payload: []byte("x")})
		require.Equal(t, 1, inline)
	}
}

// Each publish finds its own subscribers: the pooled Subscribers one
// publish used is emptied before the next gets it, so nothing of a topic's
// subscribers reaches another topic's publish.
func TestPublishesDoNotShareSubscribers(t *testing.T) {
	s := newServer()
	clA := s.NewClient(discardConn{}, "t", "on-a", false)
	clB := s.NewClient(discardConn{}, "t", "on-b", false)
	for _, cl := range []*Client{clA, clB} {
		cl.Properties.ProtocolVersion = 5
		s.Clients.Add(cl)
	}
	require.True(t, s.Topics.Subscribe(clA.ID, packets.Subscription{Filter: "a/#"}))
	require.True(t, s.Topics.Subscribe(clB.ID, packets.Subscription{Filter: "b/#"}))
	require.True(t, s.Topics.Subscribe("sharer", packets.Subscription{Filter: SharePrefix + "/g/a/#", ShareName: []string{"g"}}))
	for i := 0; i < 50; i++ {
		for _, topic := range []string{"a/x", "b/x"} {
			s.publishToSubscribers(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: []byte("p")})
		}
	}
	for cl, want := range map[*Client]string{clA: "a/x", clB: "b/x"} {
		require.Len(t, cl.State.outbound, 50, cl.ID)
		for len(cl.State.outbound) > 0 {
			require.Equal(t, want, (<-cl.State.outbound).TopicName, cl.ID)
		}
	}
}

// releaseSubscribers empties what it pools, and leaves a large fan-out's
// map (which clear would sweep slot by slot at every later publish) to the
// garbage collector.
func TestReleaseSubscribers(t *testing.T) {
	index := NewTopicsIndex()
	index.Subscribe("cl1", packets.Subscription{Filter: "a/b"})
	index.Subscribe("sh1", packets.Subscription{Filter: SharePrefix + "/g/a/b", ShareName: []string{"g"}})
	index.InlineSubscribe(InlineSubscription{Subscription: packets.Subscription{Filter: "a/b", Identifier: 1}, Handler: func(*Client, packets.Subscription, packets.Packet) {}})
	subs := index.subscribersOf("a/b")
	require.Len(t, subs.Subscriptions, 1)
	require.NotEmpty(t, subs.Shared)
	require.NotEmpty(t, subs.InlineSubscriptions)
	releaseSubscribers(subs)
	require.Empty(t, subs.Subscriptions)
	require.NotNil(t, subs.Subscriptions)
	require.Nil(t, subs.Shared)
	require.Nil(t, subs.SharedSelected)
	require.Nil(t, subs.InlineSubscriptions)

	large := &Subscribers{Subscriptions: map[string]packets.Subscription{}}
	for i := 0; i <= maxPooledSubscribers; i++ {
		large.Subscriptions["cl"+strconv.Itoa(i)] = packets.Subscription{Filter: "#"}
	}
	releaseSubscribers(large)
	require.Len(t, large.Subscriptions, maxPooledSubscribers+1)
}
