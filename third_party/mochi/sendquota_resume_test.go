// SPDX-License-Identifier: MIT

package mqtt

import (
	"bytes"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// eventLog records what the peers of a test send and receive, with the
// time, for the test's failure message (prints would change the timing).
type eventLog struct {
	mu    sync.Mutex
	start time.Time
	lines []string
}

func newEventLog() *eventLog { return &eventLog{start: time.Now()} }

func (l *eventLog) add(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%9.3fms ", float64(time.Since(l.start).Microseconds())/1000)+fmt.Sprintf(format, a...))
}

func (l *eventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// netPeer is an MQTT v5 (or v3.1.1) client on a TCP connection to the
// server's listener, written with mochi's packet codec: the server runs
// attachClient (CONNECT, takeover, CONNACK, resend, read loop) as for any
// client.
type netPeer struct {
	name    string
	version byte // the protocol version: 5, or 4 (MQTT 3.1.1)
	conn    net.Conn
	wmu     sync.Mutex
	wire    chan packets.Packet
	log     *eventLog
}

// netServer runs s with mochi's default capabilities on a loopback TCP
// port.
func netServer(t *testing.T) (*Server, string) {
	t.Helper()
	s := New(&Options{Logger: logger})
	require.NoError(t, s.AddHook(new(AllowHook), nil))
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	require.NoError(t, s.AddListener(l))
	require.NoError(t, s.Serve())
	t.Cleanup(func() { _ = s.Close() })
	return s, l.Address()
}

// dialNetPeer connects as client id, with Receive Maximum receiveMax (0:
// none) and a session that outlives the connection by expiry seconds, and
// returns the CONNACK, which must be the first packet the server writes.
func dialNetPeer(t *testing.T, s *Server, addr, name, id string, clean bool, receiveMax uint16, expiry uint32, log *eventLog) (*netPeer, packets.Packet) {
	t.Helper()
	return dialNetPeerVersion(t, s, addr, name, id, 5, clean, receiveMax, expiry, log)
}

// dialNetPeerVersion is dialNetPeer with protocol version version; a
// version 4 (MQTT 3.1.1) CONNECT has no properties: no Receive Maximum, and
// a session that outlives the connection if clean is false.
func dialNetPeerVersion(t *testing.T, s *Server, addr, name, id string, version byte, clean bool, receiveMax uint16, expiry uint32, log *eventLog) (*netPeer, packets.Packet) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	p := &netPeer{name: name, version: version, conn: conn, wire: make(chan packets.Packet, 10000), log: log}
	t.Cleanup(func() { _ = conn.Close() })
	reader := s.NewClient(conn, "peer", name, false)
	reader.Properties.ProtocolVersion = version
	go func() {
		defer close(p.wire)
		for {
			fh := new(packets.FixedHeader)
			if err := reader.ReadFixedHeader(fh); err != nil {
				log.add("%s: read: %v", name, err)
				return
			}
			pk, err := reader.ReadPacket(fh)
			if err != nil {
				log.add("%s: read: %v", name, err)
				return
			}
			log.add("%s <- %s", name, describe(pk))
			p.wire <- pk
		}
	}()
	p.send(t, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Clean: clean, Keepalive: 60},
		Properties:  packets.Properties{ReceiveMaximum: receiveMax, SessionExpiryInterval: expiry, SessionExpiryIntervalFlag: expiry > 0},
	})
	ack, ok := p.next(5 * time.Second)
	require.True(t, ok, "%s: no CONNACK", name)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type, "%s: the first packet is not the CONNACK: %s", name, describe(ack))
	require.Equal(t, packets.CodeSuccess.Code, ack.ReasonCode)
	return p, ack
}

// describe is a packet as the event log shows it.
func describe(pk packets.Packet) string {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		return fmt.Sprintf("PUBLISH id %d qos %d dup %v %q", pk.PacketID, pk.FixedHeader.Qos, pk.FixedHeader.Dup, pk.Payload)
	case packets.Connack:
		return fmt.Sprintf("CONNACK present %v code %#x", pk.SessionPresent, pk.ReasonCode)
	case packets.Disconnect:
		return fmt.Sprintf("DISCONNECT code %#x", pk.ReasonCode)
	default:
		return fmt.Sprintf("%s id %d code %#x", packets.PacketNames[pk.FixedHeader.Type], pk.PacketID, pk.ReasonCode)
	}
}

// send writes pk; it reports whether the connection took it (a peer the
// server disconnected may still try to acknowledge).
func (p *netPeer) send(t *testing.T, pk packets.Packet) bool {
	pk.ProtocolVersion = p.version
	buf := new(bytes.Buffer)
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(buf)
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	default:
		err = fmt.Errorf("cannot send %v", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Errorf("%s: encode: %v", p.name, err)
		return false
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.log.add("%s -> %s", p.name, describe(pk))
	_, err = p.conn.Write(buf.Bytes())
	return err == nil
}

// next returns the next packet the server wrote, or false after wait or
// once the connection is closed.
func (p *netPeer) next(wait time.Duration) (packets.Packet, bool) {
	select {
	case pk, ok := <-p.wire:
		return pk, ok
	case <-time.After(wait):
		return packets.Packet{}, false
	}
}

// expect returns the next packet, which must be of type typ.
func (p *netPeer) expect(t *testing.T, typ byte) packets.Packet {
	t.Helper()
	pk, ok := p.next(5 * time.Second)
	require.True(t, ok, "%s: no %s", p.name, packets.PacketNames[typ])
	require.Equal(t, typ, pk.FixedHeader.Type, "%s: %s, want %s", p.name, describe(pk), packets.PacketNames[typ])
	return pk
}

func (p *netPeer) subscribe(t *testing.T, filter string) {
	t.Helper()
	p.subscribeQos(t, filter, 1)
}

// subscribeQos subscribes to filter at QoS qos, which the server grants.
func (p *netPeer) subscribeQos(t *testing.T, filter string, qos byte) {
	t.Helper()
	p.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: qos}}})
	ack := p.expect(t, packets.Suback)
	require.Equal(t, []byte{qos}, ack.ReasonCodes)
}

// publish publishes a QoS 1 message, as packet id, and waits for its
// PUBACK, as a client does before its next message.
func (p *netPeer) publish(t *testing.T, id uint16, topic, payload string) error {
	if !p.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id,
		TopicName: topic, Payload: []byte(payload)}) {
		return fmt.Errorf("%s: publish %q: connection closed", p.name, payload)
	}
	pk, ok := p.next(5 * time.Second)
	if !ok || pk.FixedHeader.Type != packets.Puback || pk.PacketID != id || pk.ReasonCode != packets.CodeSuccess.Code {
		return fmt.Errorf("%s: publish %q: got %s, want its PUBACK", p.name, payload, describe(pk))
	}
	return nil
}

// publishQos publishes a message at QoS qos, as packet id, and completes
// its flow (PUBACK; PUBREC, PUBREL, PUBCOMP) before it returns.
func (p *netPeer) publishQos(t *testing.T, qos byte, id uint16, topic, payload string) error {
	if qos < 2 {
		return p.publish(t, id, topic, payload)
	}
	if !p.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: id,
		TopicName: topic, Payload: []byte(payload)}) {
		return fmt.Errorf("%s: publish %q: connection closed", p.name, payload)
	}
	pk, ok := p.next(5 * time.Second)
	if !ok || pk.FixedHeader.Type != packets.Pubrec || pk.PacketID != id || pk.ReasonCode != packets.CodeSuccess.Code {
		return fmt.Errorf("%s: publish %q: got %s, want its PUBREC", p.name, payload, describe(pk))
	}
	if !p.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id}) {
		return fmt.Errorf("%s: publish %q: connection closed", p.name, payload)
	}
	pk, ok = p.next(5 * time.Second)
	if !ok || pk.FixedHeader.Type != packets.Pubcomp || pk.PacketID != id || pk.ReasonCode != packets.CodeSuccess.Code {
		return fmt.Errorf("%s: publish %q: got %s, want its PUBCOMP", p.name, payload, describe(pk))
	}
	return nil
}

func (p *netPeer) ack(t *testing.T, id uint16) bool {
	return p.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
}

// stream tells the messages of several publishers apart: "n i" is message
// i of publisher n.
func streamOf(pk packets.Packet) (n, i int) {
	_, _ = fmt.Sscanf(string(pk.Payload), "%d %d", &n, &i)
	return n, i
}

// TestSendQuotaSessionTakeoverWhilePublishing: a subscriber with a Receive
// Maximum has a full quota of QoS 1 messages unacknowledged and more waiting
// behind them when another connection takes its session over (same client
// id, Clean Start 0), while four publishers publish at full rate. The new
// connection gets its CONNACK first; then the new connection's Receive
// Maximum, not the old one's, bounds what is unacknowledged (none: the new
// connection gets everything without acknowledging); each message the old
// connection got unacknowledged is resent with DUP; and every message of
// every publisher arrives, once, in the publisher's order ([MQTT-4.6.0-6]).
// With the old connection acknowledging what it gets, the two connections
// together get every message; one that reaches both is resent with DUP.
// Through the server's own listener, with attachClient's takeover, under
// -race; the takeover starts at a random moment within the publishing.
func TestSendQuotaSessionTakeoverWhilePublishing(t *testing.T) {
	for _, tc := range []struct {
		oldMax, newMax uint16
		oldAcks        bool
	}{{3, 5, false}, {5, 3, false}, {3, 0, false}, {3, 5, true}, {5, 1, true}} {
		t.Run(fmt.Sprintf("receive maximum %d then %d, old acknowledging %v", tc.oldMax, tc.newMax, tc.oldAcks), func(t *testing.T) {
			testSessionTakeoverWhilePublishing(t, tc.oldMax, tc.newMax, tc.oldAcks)
		})
	}
}

func testSessionTakeoverWhilePublishing(t *testing.T, oldMax, newMax uint16, oldAcks bool) {
	const publishers, each, before = 4, 150, 5 // before: messages each publishes before the takeover starts
	s, addr := netServer(t)
	log := newEventLog()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("event log:\n%s", log)
		}
	})
	old, _ := dialNetPeer(t, s, addr, "old", "sub", true, oldMax, 600, log)
	old.subscribe(t, "t/+")

	// The old connection: it acknowledges nothing, or everything at once.
	type got struct {
		n, i int
		dup  bool
	}
	var oldGot []got
	oldDone := make(chan struct{})
	oldFull := make(chan struct{})
	go func() {
		defer close(oldDone)
		for pk := range old.wire {
			if pk.FixedHeader.Type != packets.Publish {
				continue
			}
			n, i := streamOf(pk)
			oldGot = append(oldGot, got{n, i, pk.FixedHeader.Dup})
			if !oldAcks && len(oldGot) > int(oldMax) {
				t.Errorf("old connection: %d unacknowledged, Receive Maximum %d", len(oldGot), oldMax)
			}
			if len(oldGot) == int(oldMax) {
				close(oldFull)
			}
			if oldAcks {
				old.ack(t, pk.PacketID)
			}
		}
	}()

	var pubs []*netPeer
	for n := 0; n < publishers; n++ {
		p, _ := dialNetPeer(t, s, addr, fmt.Sprintf("pub-%d", n), fmt.Sprintf("pub-%d", n), true, 0, 0, log)
		pubs = append(pubs, p)
	}
	var published atomic.Int32
	resume := make(chan struct{})
	var wg sync.WaitGroup
	for n, p := range pubs {
		n, p := n, p
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if i == before {
					<-resume
				}
				if err := p.publish(t, uint16(i%65535+1), fmt.Sprintf("t/%d", n), fmt.Sprintf("%d %d", n, i)); err != nil {
					t.Error(err)
					return
				}
				published.Add(1)
			}
		}()
	}
	select {
	case <-oldFull:
	case <-time.After(5 * time.Second):
		t.Fatalf("the old connection did not get %d messages", oldMax)
	}
	for published.Load() < publishers*before {
		time.Sleep(100 * time.Microsecond)
	}

	// Take the session over at a random moment while the publishers go on.
	close(resume)
	time.Sleep(time.Duration(rand.Intn(3000)) * time.Microsecond)
	log.add("takeover")
	cur, ack := dialNetPeer(t, s, addr, "new", "sub", false, newMax, 600, log)
	require.True(t, ack.SessionPresent)
	select {
	case <-oldDone: // the takeover closed the old connection
	case <-time.After(5 * time.Second):
		t.Fatal("the takeover left the old connection open")
	}

	var newGot []got
	var unacked []uint16
	maxUnacked := 0
	receive := func(wait time.Duration) bool {
		t.Helper()
		pk, ok := cur.next(wait)
		if !ok {
			return false
		}
		require.Equal(t, packets.Publish, pk.FixedHeader.Type, "new connection: %s", describe(pk))
		n, i := streamOf(pk)
		newGot = append(newGot, got{n, i, pk.FixedHeader.Dup})
		unacked = append(unacked, pk.PacketID)
		if len(unacked) > maxUnacked {
			maxUnacked = len(unacked)
		}
		if newMax > 0 {
			require.LessOrEqual(t, len(unacked), int(newMax), "new connection: unacknowledged PUBLISH packets beyond its Receive Maximum")
		}
		return true
	}
	lastOf := make([]int, publishers)
	for n := range lastOf {
		lastOf[n] = -1
	}
	complete := func() bool {
		for n := range lastOf {
			lastOf[n] = -1
		}
		for _, g := range newGot {
			lastOf[g.n] = g.i
		}
		for _, l := range lastOf {
			if l != each-1 {
				return false
			}
		}
		return true
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	if newMax == 0 {
		// No Receive Maximum: everything comes without an acknowledgement.
		for !complete() {
			require.True(t, receive(5*time.Second), "new connection, no Receive Maximum: stalled after %d messages without acknowledging", len(newGot))
		}
	} else {
		// The new quota, full, before any acknowledgement; then each
		// acknowledgement lets messages go, never more than the quota.
		for len(newGot) < int(newMax) {
			require.True(t, receive(5*time.Second), "new connection: %d of %d messages before any acknowledgement", len(newGot), newMax)
		}
		require.False(t, receive(100*time.Millisecond), "new connection: more than its Receive Maximum %d unacknowledged", newMax)
		for !complete() {
			if len(unacked) > 0 && (len(unacked) == int(newMax) || rng.Intn(2) == 0) {
				require.True(t, cur.ack(t, unacked[0]))
				unacked = unacked[1:]
			}
			wait := 5 * time.Second
			if len(unacked) > 0 && len(unacked) < int(newMax) {
				wait = time.Duration(rng.Intn(2000)) * time.Microsecond
			}
			if !receive(wait) && wait == 5*time.Second {
				t.Fatalf("new connection: stalled after %d messages", len(newGot))
			}
		}
	}
	wg.Wait()
	for _, id := range unacked {
		require.True(t, cur.ack(t, id))
	}
	unacked = nil
	require.False(t, receive(50*time.Millisecond), "new connection: a message after the last of each publisher")

	// Each publisher's messages, in its order, once; with the old
	// connection's, all of them.
	oldHas := map[[2]int]bool{}
	for _, g := range oldGot {
		oldHas[[2]int{g.n, g.i}] = true
	}
	next := make([]int, publishers)
	for _, g := range newGot {
		if g.i < next[g.n] {
			t.Fatalf("new connection: publisher %d's message %d after its message %d", g.n, g.i, next[g.n]-1)
		}
		for ; next[g.n] < g.i; next[g.n]++ {
			if !oldAcks || !oldHas[[2]int{g.n, next[g.n]}] {
				t.Fatalf("publisher %d's message %d lost (the new connection got %d next)", g.n, next[g.n], g.i)
			}
		}
		next[g.n] = g.i + 1
		if oldHas[[2]int{g.n, g.i}] && !g.dup {
			t.Errorf("publisher %d's message %d, got unacknowledged by the old connection, resent without DUP", g.n, g.i)
		}
	}
	if !oldAcks {
		require.Len(t, oldGot, int(oldMax))
		require.Len(t, newGot, publishers*each)
	}
	if newMax > 0 {
		require.Equal(t, int(newMax), maxUnacked)
	} else {
		require.Greater(t, maxUnacked, int(oldMax))
	}
	require.Eventually(t, func() bool {
		cl, ok := s.Clients.Get("sub")
		return ok && cl.State.Inflight.Len() == 0
	}, 5*time.Second, time.Millisecond, "the session keeps messages in flight, all acknowledged")
	cl, _ := s.Clients.Get("sub")
	require.Equal(t, int32(newMax), atomic.LoadInt32(&cl.State.Inflight.sendQuota))
}

// TestSendQuotaResumeWithMoreQueuedThanQuota: messages queued for a
// session whose connection has gone, more than the Receive Maximum of the
// connection that resumes it: what is resent stays within the new
// connection's quota, and then each acknowledgement lets exactly one more
// go, in order, also those published while the session resumes. With no
// Receive Maximum, all come at once.
func TestSendQuotaResumeWithMoreQueuedThanQuota(t *testing.T) {
	for _, newMax := range []uint16{2, 5, 0} {
		t.Run(fmt.Sprintf("receive maximum 3 then %d", newMax), func(t *testing.T) {
			const queued, during = 20, 20
			s, addr := netServer(t)
			log := newEventLog()
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("event log:\n%s", log)
				}
			})
			old, _ := dialNetPeer(t, s, addr, "old", "sub", true, 3, 600, log)
			old.subscribe(t, "t/+")
			old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
			for range old.wire {
			}
			require.Eventually(t, func() bool {
				cl, ok := s.Clients.Get("sub")
				return ok && cl.Closed()
			}, 5*time.Second, time.Millisecond)

			pub, _ := dialNetPeer(t, s, addr, "pub", "pub", true, 0, 0, log)
			for i := 0; i < queued; i++ {
				require.NoError(t, pub.publish(t, uint16(i+1), "t/0", fmt.Sprintf("0 %d", i)))
			}
			published := make(chan struct{})
			go func() {
				defer close(published)
				for i := queued; i < queued+during; i++ {
					if err := pub.publish(t, uint16(i+1), "t/0", fmt.Sprintf("0 %d", i)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			cur, ack := dialNetPeer(t, s, addr, "new", "sub", false, newMax, 600, log)
			require.True(t, ack.SessionPresent)

			var unacked []uint16
			next := 0
			receive := func(wait time.Duration) bool {
				t.Helper()
				pk, ok := cur.next(wait)
				if !ok {
					return false
				}
				require.Equal(t, packets.Publish, pk.FixedHeader.Type, describe(pk))
				_, i := streamOf(pk)
				require.Equal(t, next, i, "message %d when %d was due", i, next)
				next++
				unacked = append(unacked, pk.PacketID)
				if newMax > 0 {
					require.LessOrEqual(t, len(unacked), int(newMax), "unacknowledged PUBLISH packets beyond Receive Maximum")
				}
				return true
			}
			if newMax == 0 {
				for next < queued+during {
					require.True(t, receive(5*time.Second), "no Receive Maximum: stalled at %d without acknowledging", next)
				}
			} else {
				for next < int(newMax) {
					require.True(t, receive(5*time.Second), "%d of %d messages before any acknowledgement", next, newMax)
				}
				require.False(t, receive(100*time.Millisecond), "more than Receive Maximum %d resent", newMax)
				for next < queued+during {
					require.True(t, cur.ack(t, unacked[0]))
					unacked = unacked[1:]
					require.True(t, receive(5*time.Second), "stalled at %d", next)
					require.False(t, receive(time.Millisecond), "more than one message for one acknowledgement")
				}
			}
			<-published
			for _, id := range unacked {
				require.True(t, cur.ack(t, id))
			}
			require.False(t, receive(50*time.Millisecond))
			require.Eventually(t, func() bool {
				cl, ok := s.Clients.Get("sub")
				return ok && cl.State.Inflight.Len() == 0
			}, 5*time.Second, time.Millisecond)
		})
	}
}
