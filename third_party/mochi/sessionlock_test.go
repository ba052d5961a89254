// SPDX-License-Identifier: MIT

package mqtt

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// holdSessionEnd holds the end of one client's session (its connection's
// clean-up, at OnUnsubscribed, or its expiry, at OnClientExpired) until
// released, or for at most hold: long enough for a connection taking the
// id meanwhile to finish, unless it waits for the end.
type holdSessionEnd struct {
	HookBase
	mu      sync.Mutex
	cl      *Client // whose end is held
	held    chan struct{}
	release chan struct{}
	hold    time.Duration
	expired []*Client // OnClientExpired's clients
}

func newHoldSessionEnd() *holdSessionEnd {
	return &holdSessionEnd{held: make(chan struct{}), release: make(chan struct{}), hold: 500 * time.Millisecond}
}

func (h *holdSessionEnd) ID() string { return "hold-session-end" }
func (h *holdSessionEnd) Provides(b byte) bool {
	return b == OnUnsubscribed || b == OnClientExpired
}

func (h *holdSessionEnd) holding(cl *Client) {
	h.mu.Lock()
	mine := h.cl == cl
	if mine {
		h.cl = nil
	}
	h.mu.Unlock()
	if !mine {
		return
	}
	close(h.held)
	select {
	case <-h.release:
	case <-time.After(h.hold):
	}
}

func (h *holdSessionEnd) OnUnsubscribed(cl *Client, pk packets.Packet) {
	if len(pk.Filters) > 0 && pk.PacketID == 0 { // UnsubscribeClient's
		h.holding(cl)
	}
}

func (h *holdSessionEnd) OnClientExpired(cl *Client) {
	h.mu.Lock()
	h.expired = append(h.expired, cl)
	h.mu.Unlock()
	h.holding(cl)
}

// delivered publishes a QoS 0 message on topic and reports whether p got it.
func delivered(t *testing.T, s *Server, p *netPeer, topic string) bool {
	t.Helper()
	s.publishToSubscribers(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: []byte("hello")})
	pk, ok := p.next(300 * time.Millisecond)
	return ok && pk.FixedHeader.Type == packets.Publish && string(pk.Payload) == "hello"
}

// TestConnectionEndingWhileItsIDIsTaken: a clean session whose connection
// ends (the client's DISCONNECT) while a new connection takes its client
// id leaves the new connection alone. Its clean-up (removing its
// subscriptions, then the client by id) ran after it had checked it was
// not taken over: a new connection taking the id in between was removed
// from Clients and got nothing, though connected and subscribed. Now the
// new connection waits for the clean-up, which the hook holds for
// half a second: the test fails if the new connection is acknowledged
// within it.
func TestConnectionEndingWhileItsIDIsTaken(t *testing.T) {
	s, addr := netServer(t)
	h := newHoldSessionEnd()
	require.NoError(t, s.AddHook(h, nil))
	log := newEventLog()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("event log:\n%s", log)
		}
	})
	old, _ := dialNetPeer(t, s, addr, "old", "dev", true, 0, 0, log)
	old.subscribe(t, "t/old")
	h.mu.Lock()
	h.cl, _ = s.Clients.Get("dev")
	h.mu.Unlock()

	old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	<-h.held
	start := time.Now()
	cur, ack := dialNetPeer(t, s, addr, "new", "dev", true, 0, 0, log)
	waited := time.Since(start)
	close(h.release)
	require.False(t, ack.SessionPresent)
	require.GreaterOrEqual(t, waited, h.hold/2, "the new connection was acknowledged while the old one's clean-up was held")

	cur.subscribe(t, "t/new")
	held, ok := s.Clients.Get("dev")
	require.True(t, ok, "the new connection is not among the clients")
	require.Equal(t, cur.conn.LocalAddr().String(), held.Net.Remote)
	require.True(t, delivered(t, s, cur, "t/new"), "the new connection got nothing")
	require.False(t, delivered(t, s, cur, "t/old"), "the old connection's subscription outlived it")
}

// TestSessionExpiringWhileResumed: a session that expires while a new
// connection resumes it either expires first (the new connection starts a
// session of its own) or is resumed (and does not expire): the expiry
// deleted the client by id after its OnClientExpired, also the connection
// that had resumed it meanwhile, which then got nothing. The expiry of a
// client that was resumed after the clients were listed does nothing.
func TestSessionExpiringWhileResumed(t *testing.T) {
	t.Run("resumed during the expiry", func(t *testing.T) {
		s, addr := netServer(t)
		h := newHoldSessionEnd()
		require.NoError(t, s.AddHook(h, nil))
		log := newEventLog()
		old, _ := dialNetPeer(t, s, addr, "old", "dev", false, 0, 1, log)
		old.subscribe(t, "t/old")
		gone, _ := s.Clients.Get("dev")
		h.mu.Lock()
		h.cl = gone
		h.mu.Unlock()
		old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		require.Eventually(t, func() bool { return gone.StopTime() > 0 }, 5*time.Second, time.Millisecond)

		go s.clearExpiredClients(time.Now().Unix() + 10)
		<-h.held
		start := time.Now()
		cur, ack := dialNetPeer(t, s, addr, "new", "dev", false, 0, 600, log)
		waited := time.Since(start)
		close(h.release)
		require.False(t, ack.SessionPresent, "the session was resumed while it expired")
		require.GreaterOrEqual(t, waited, h.hold/2, "the new connection was acknowledged while the expiry was held")

		cur.subscribe(t, "t/new")
		held, ok := s.Clients.Get("dev")
		require.True(t, ok, "the new connection is not among the clients")
		require.Equal(t, cur.conn.LocalAddr().String(), held.Net.Remote)
		require.True(t, delivered(t, s, cur, "t/new"), "the new connection got nothing")
	})

	t.Run("resumed after the clients were listed", func(t *testing.T) {
		s, addr := netServer(t)
		h := newHoldSessionEnd()
		require.NoError(t, s.AddHook(h, nil))
		log := newEventLog()
		old, _ := dialNetPeer(t, s, addr, "old", "dev", false, 0, 1, log)
		old.subscribe(t, "t/old")
		gone, _ := s.Clients.Get("dev")
		old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		require.Eventually(t, func() bool { return gone.StopTime() > 0 }, 5*time.Second, time.Millisecond)

		cur, ack := dialNetPeer(t, s, addr, "new", "dev", false, 0, 600, log)
		require.True(t, ack.SessionPresent)
		s.expireClient("dev", gone) // as clearExpiredClients listed it
		h.mu.Lock()
		require.Empty(t, h.expired, "OnClientExpired for a session resumed")
		h.mu.Unlock()
		held, ok := s.Clients.Get("dev")
		require.True(t, ok, "the resuming connection is not among the clients")
		require.Equal(t, cur.conn.LocalAddr().String(), held.Net.Remote)
		require.True(t, delivered(t, s, cur, "t/old"), "the resumed session's subscription got nothing")
	})
}

// holdSubscription holds the OnSubscribe or OnUnsubscribe of the connection
// whose remote address is set until released, and tells when that
// connection ends.
type holdSubscription struct {
	HookBase
	mu      sync.Mutex
	remote  string
	held    chan struct{}
	release chan struct{}
	ended   chan struct{}
}

func newHoldSubscription(remote string) *holdSubscription {
	return &holdSubscription{remote: remote, held: make(chan struct{}), release: make(chan struct{}), ended: make(chan struct{})}
}

func (h *holdSubscription) ID() string { return "hold-subscription" }
func (h *holdSubscription) Provides(b byte) bool {
	return b == OnSubscribe || b == OnUnsubscribe || b == OnDisconnect
}

func (h *holdSubscription) mine(cl *Client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return cl.Net.Remote == h.remote
}

func (h *holdSubscription) hold(cl *Client) {
	if h.mine(cl) {
		close(h.held)
		<-h.release
	}
}

func (h *holdSubscription) OnSubscribe(cl *Client, pk packets.Packet) packets.Packet {
	h.hold(cl)
	return pk
}

func (h *holdSubscription) OnUnsubscribe(cl *Client, pk packets.Packet) packets.Packet {
	h.hold(cl)
	return pk
}

func (h *holdSubscription) OnDisconnect(cl *Client, _ error, _ bool) {
	if h.mine(cl) {
		close(h.ended)
	}
}

// TestLateSubscriptionChangeOfATakenOverConnection: a SUBSCRIBE or
// UNSUBSCRIBE the previous connection was still processing when a new
// connection took its client id changes nothing. mochi's index keeps
// subscriptions by client id: a late SUBSCRIBE gave a new clean session a
// subscription it never asked for (in no client's own list, so never taken
// out again), and a late UNSUBSCRIBE took out a resumed session's
// subscription.
func TestLateSubscriptionChangeOfATakenOverConnection(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("subscribe, v%d", version), func(t *testing.T) {
			s, addr := netServer(t)
			log := newEventLog()
			old, _ := dialNetPeerVersion(t, s, addr, "old", "dev", version, true, 0, 0, log)
			h := newHoldSubscription(old.conn.LocalAddr().String())
			require.NoError(t, s.AddHook(h, nil))
			old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
				Filters: packets.Subscriptions{{Filter: "t/old"}}})
			<-h.held
			cur, ack := dialNetPeerVersion(t, s, addr, "new", "dev", version, true, 0, 0, log)
			require.False(t, ack.SessionPresent)
			close(h.release)
			<-h.ended // the SUBSCRIBE went as far as it goes
			cl, _ := s.Clients.Get("dev")
			require.Empty(t, cl.State.Subscriptions.GetAll())
			require.False(t, delivered(t, s, cur, "t/old"), "the new session got the old connection's late subscription")
		})
	}
	t.Run("unsubscribe, v5", func(t *testing.T) {
		s, addr := netServer(t)
		log := newEventLog()
		old, _ := dialNetPeer(t, s, addr, "old", "dev", false, 0, 600, log)
		old.subscribe(t, "t/kept")
		h := newHoldSubscription(old.conn.LocalAddr().String())
		require.NoError(t, s.AddHook(h, nil))
		old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 2,
			Filters: packets.Subscriptions{{Filter: "t/kept"}}})
		<-h.held
		cur, ack := dialNetPeer(t, s, addr, "new", "dev", false, 0, 600, log)
		require.True(t, ack.SessionPresent)
		close(h.release)
		<-h.ended
		require.True(t, delivered(t, s, cur, "t/kept"), "the resumed session lost its subscription to the old connection's late UNSUBSCRIBE")
	})
}
