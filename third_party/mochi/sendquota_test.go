// SPDX-License-Identifier: MIT

package mqtt

import (
	"fmt"
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// quotaPeer is a subscriber connected to s through a pipe, with a goroutine
// reading what the server writes to it: the packets on the wire.
type quotaPeer struct {
	cl   *Client
	r, w net.Conn
	wire chan packets.Packet
	errs chan error
}

// newQuotaPeer connects a client of protocol version v and Receive Maximum
// receiveMax (0: none) to s, as attachClient would, without a read loop:
// the test acknowledges through s.processPacket, as the read loop would.
func newQuotaPeer(t *testing.T, s *Server, id string, v byte, receiveMax uint16) *quotaPeer {
	t.Helper()
	r, w := net.Pipe()
	cl := s.NewClient(w, "tcp", id, false)
	cl.ParseConnect("tcp", packets.Packet{
		ProtocolVersion: v,
		Connect:         packets.ConnectParams{ClientIdentifier: id, Keepalive: 60},
		Properties:      packets.Properties{ReceiveMaximum: receiveMax},
	})
	s.Clients.Add(cl)
	go cl.WriteLoop()

	reader := s.NewClient(r, "tcp", id+"-peer", false)
	reader.Properties.ProtocolVersion = v
	p := &quotaPeer{cl: cl, r: r, w: w, wire: make(chan packets.Packet, 100000), errs: make(chan error, 1)}
	go func() {
		for {
			fh := new(packets.FixedHeader)
			if err := reader.ReadFixedHeader(fh); err != nil {
				p.errs <- err
				close(p.wire)
				return
			}
			pk, err := reader.ReadPacket(fh)
			if err != nil {
				p.errs <- err
				close(p.wire)
				return
			}
			p.wire <- pk
		}
	}()
	t.Cleanup(func() {
		cl.Stop(nil)
		_ = w.Close()
		_ = r.Close()
	})
	return p
}

// next returns the next packet on the wire, or false after wait.
func (p *quotaPeer) next(wait time.Duration) (packets.Packet, bool) {
	select {
	case pk, ok := <-p.wire:
		return pk, ok
	case <-time.After(wait):
		return packets.Packet{}, false
	}
}

func quotaAck(id uint16) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id, ProtocolVersion: 5}
}

func quotaPublish(topic string, qos byte, payload string) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     []byte(payload),
		Created:     time.Now().Unix(),
	}
}

// TestSendQuotaConcurrentPublishersAndAcks: publishers deliver QoS 1
// messages to a subscriber with a Receive Maximum while it acknowledges them
// a few at a time, in any order, from its own goroutine (the read loop).
// The server never has more than Receive Maximum unacknowledged PUBLISH
// packets out ([MQTT-3.3.4-9]), each publisher's messages arrive in order
// ([MQTT-4.6.0-6]), and all of them arrive: no quota is lost, and no
// message waits while quota is free.
func TestSendQuotaConcurrentPublishersAndAcks(t *testing.T) {
	for _, tc := range []struct {
		receiveMax       uint16
		publishers, each int
	}{{1, 1, 300}, {3, 1, 500}, {3, 8, 300}, {20, 8, 300}} {
		t.Run(fmt.Sprintf("receive maximum %d, %d publishers", tc.receiveMax, tc.publishers), func(t *testing.T) {
			s := newServer()
			p := newQuotaPeer(t, s, "sub", 5, tc.receiveMax)
			sub := packets.Subscription{Filter: "a/b", Qos: 1}

			var wg sync.WaitGroup
			for n := 0; n < tc.publishers; n++ {
				n := n
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < tc.each; i++ {
						_, err := s.publishToClient(p.cl, sub, quotaPublish("a/b", 1, fmt.Sprintf("%d %d", n, i)))
						if err != nil {
							t.Errorf("publisher %d, message %d: %v", n, i, err)
							return
						}
					}
				}()
			}

			done := make(chan struct{})
			go func() { // the subscriber, and mochi's read loop for its acks
				defer close(done)
				rng := rand.New(rand.NewSource(int64(tc.receiveMax)))
				next := make([]int, tc.publishers)
				var unacked []uint16
				want := tc.publishers * tc.each
				for got := 0; got < want || len(unacked) > 0; {
					if got < want {
						wait := 5 * time.Second
						if len(unacked) == int(tc.receiveMax) {
							wait = time.Millisecond // the quota is used up: nothing may come
						}
						pk, ok := p.next(wait)
						switch {
						case ok && len(unacked) == int(tc.receiveMax):
							t.Errorf("PUBLISH %q with %d unacknowledged (Receive Maximum %d)", pk.Payload, len(unacked), tc.receiveMax)
							return
						case ok:
							var n, i int
							_, _ = fmt.Sscanf(string(pk.Payload), "%d %d", &n, &i)
							if i != next[n] {
								t.Errorf("publisher %d: message %d arrived when %d was due", n, i, next[n])
								return
							}
							next[n]++
							got++
							unacked = append(unacked, pk.PacketID)
							continue
						case len(unacked) == 0:
							t.Errorf("stalled: %d of %d delivered, none unacknowledged", got, want)
							return
						}
					}
					// Acknowledge some of them, in any order.
					rng.Shuffle(len(unacked), func(a, b int) { unacked[a], unacked[b] = unacked[b], unacked[a] })
					k := 1 + rng.Intn(len(unacked))
					for _, id := range unacked[:k] {
						if err := s.processPacket(p.cl, quotaAck(id)); err != nil {
							t.Error(err)
							return
						}
					}
					unacked = append(unacked[:0], unacked[k:]...)
				}
			}()

			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("the subscriber or a publisher hangs")
			}
			wg.Wait()
			require.Equal(t, 0, p.cl.State.Inflight.Len())
			require.Equal(t, int32(tc.receiveMax), atomic.LoadInt32(&p.cl.State.Inflight.sendQuota)) // none lost
			require.Equal(t, int64(0), atomic.LoadInt64(&s.Info.Inflight))
		})
	}
}

// TestSendQuotaHoldsBackAndReleasesInOrder: with Receive Maximum 3 and no
// acknowledgement, three of ten messages are sent; each PUBACK lets the next
// one go, through the write loop, in order; after the last acknowledgement
// the quota is whole again.
func TestSendQuotaHoldsBackAndReleasesInOrder(t *testing.T) {
	s := newServer()
	var encoded atomic.Int32
	require.NoError(t, s.AddHook(&encodeCounter{n: &encoded}, nil))
	p := newQuotaPeer(t, s, "sub", 5, 3)
	sub := packets.Subscription{Filter: "a/b", Qos: 1}
	for i := 0; i < 10; i++ {
		_, err := s.publishToClient(p.cl, sub, quotaPublish("a/b", 1, fmt.Sprint(i)))
		require.NoError(t, err)
	}
	var ids []uint16
	for i := 0; i < 3; i++ {
		pk, ok := p.next(time.Second)
		require.True(t, ok)
		require.Equal(t, fmt.Sprint(i), string(pk.Payload))
		ids = append(ids, pk.PacketID)
	}
	_, ok := p.next(100 * time.Millisecond)
	require.False(t, ok, "a fourth PUBLISH with three unacknowledged")

	for i := 3; i < 10; i++ {
		require.NoError(t, s.processPacket(p.cl, quotaAck(ids[0])))
		ids = ids[1:]
		pk, ok := p.next(time.Second)
		require.True(t, ok, "message %d not released", i)
		require.Equal(t, fmt.Sprint(i), string(pk.Payload))
		require.False(t, pk.FixedHeader.Dup)
		ids = append(ids, pk.PacketID)
		_, ok = p.next(10 * time.Millisecond)
		require.False(t, ok, "more than one PUBLISH released for one PUBACK")
	}
	for _, id := range ids {
		require.NoError(t, s.processPacket(p.cl, quotaAck(id)))
	}
	require.Equal(t, 0, p.cl.State.Inflight.Len())
	require.Equal(t, int32(3), atomic.LoadInt32(&p.cl.State.Inflight.sendQuota))
	require.Equal(t, int32(10), encoded.Load()) // each went through OnPacketEncode
}

// encodeCounter counts the PUBLISH packets encoded.
type encodeCounter struct {
	HookBase
	n *atomic.Int32
}

func (h *encodeCounter) ID() string { return "encode-counter" }
func (h *encodeCounter) Provides(b byte) bool {
	return b == OnPacketEncode
}
func (h *encodeCounter) OnPacketEncode(cl *Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish {
		h.n.Add(1)
	}
	return pk
}

// TestSendQuotaQos2AndRejectedPubrec: a QoS 2 delivery holds its unit of
// send quota until the PUBCOMP, or a PUBREC with an error code; the client's
// own QoS 2 flow (PUBREL) gives none.
func TestSendQuotaQos2AndRejectedPubrec(t *testing.T) {
	s := newServer()
	s.Options.Capabilities.ReceiveMaximum = 10 // the client may publish
	p := newQuotaPeer(t, s, "sub", 5, 1)
	sub := packets.Subscription{Filter: "a/b", Qos: 2}
	for i := 0; i < 3; i++ {
		_, err := s.publishToClient(p.cl, sub, quotaPublish("a/b", 2, fmt.Sprint(i)))
		require.NoError(t, err)
	}
	first, ok := p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, "0", string(first.Payload))

	// The client's own QoS 2 message: its PUBREL must not give send quota.
	require.NoError(t, s.processPacket(p.cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, TopicName: "x/y", PacketID: 500, ProtocolVersion: 5}))
	pk, ok := p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
	require.NoError(t, s.processPacket(p.cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 500, ProtocolVersion: 5}))
	pk, ok = p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, packets.Pubcomp, pk.FixedHeader.Type)
	_, ok = p.next(50 * time.Millisecond)
	require.False(t, ok, "the client's PUBREL released a PUBLISH")

	// PUBREC: the unit stays with the PUBREL.
	require.NoError(t, s.processPacket(p.cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: first.PacketID, ProtocolVersion: 5}))
	pk, ok = p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, packets.Pubrel, pk.FixedHeader.Type)
	_, ok = p.next(50 * time.Millisecond)
	require.False(t, ok, "a PUBREC released a PUBLISH")

	// PUBCOMP: the next one goes.
	require.NoError(t, s.processPacket(p.cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: first.PacketID, ProtocolVersion: 5}))
	second, ok := p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, "1", string(second.Payload))

	// A PUBREC with an error code ends the flow: the last one goes.
	require.NoError(t, s.processPacket(p.cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: second.PacketID, ReasonCode: packets.ErrUnspecifiedError.Code, ProtocolVersion: 5}))
	third, ok := p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, "2", string(third.Payload))
}

// TestSendQuotaNoReceiveMaximum: a v3.1.1 client, and a v5 client that sets
// no Receive Maximum (65,535), are not held back; mochi's MaximumInflight
// bounds them.
func TestSendQuotaNoReceiveMaximum(t *testing.T) {
	for _, v := range []byte{4, 5} {
		v := v
		t.Run(fmt.Sprint("version ", v), func(t *testing.T) {
			s := newServer()
			p := newQuotaPeer(t, s, "sub", v, 0)
			sub := packets.Subscription{Filter: "a/b", Qos: 1}
			for i := 0; i < 100; i++ {
				_, err := s.publishToClient(p.cl, sub, quotaPublish("a/b", 1, fmt.Sprint(i)))
				require.NoError(t, err)
			}
			for i := 0; i < 100; i++ {
				pk, ok := p.next(time.Second)
				require.True(t, ok, "message %d held back", i)
				require.Equal(t, fmt.Sprint(i), string(pk.Payload))
			}
		})
	}
}

// TestSendQuotaResumedSession: a session taken over by a connection with a
// smaller Receive Maximum resends what it had sent, with DUP, up to the new
// quota; the rest, and what it had never sent (without DUP), and what was
// delivered meanwhile, follow in order as acknowledgements come.
func TestSendQuotaResumedSession(t *testing.T) {
	s := newServer()
	old := newQuotaPeer(t, s, "sub", 5, 3)
	sub := packets.Subscription{Filter: "a/b", Qos: 1}
	for i := 0; i < 5; i++ { // three sent, two waiting
		_, err := s.publishToClient(old.cl, sub, quotaPublish("a/b", 1, fmt.Sprint(i)))
		require.NoError(t, err)
	}
	for i := 0; i < 3; i++ {
		_, ok := old.next(time.Second)
		require.True(t, ok)
	}
	go func() { // the DISCONNECT the take-over writes to the old connection
		for range old.wire {
		}
	}()

	r, w := net.Pipe()
	cl := s.NewClient(w, "tcp", "sub", false)
	pk := packets.Packet{
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ClientIdentifier: "sub", Keepalive: 60},
		Properties:      packets.Properties{ReceiveMaximum: 2},
	}
	cl.ParseConnect("tcp", pk)
	go cl.WriteLoop()
	t.Cleanup(func() { cl.Stop(nil); _ = w.Close(); _ = r.Close() })
	p := &quotaPeer{cl: cl, r: r, w: w, wire: make(chan packets.Packet, 100), errs: make(chan error, 1)}
	reader := s.NewClient(r, "tcp", "peer", false)
	reader.Properties.ProtocolVersion = 5
	go func() {
		for {
			fh := new(packets.FixedHeader)
			if reader.ReadFixedHeader(fh) != nil {
				close(p.wire)
				return
			}
			pk, err := reader.ReadPacket(fh)
			if err != nil {
				close(p.wire)
				return
			}
			p.wire <- pk
		}
	}()

	require.True(t, s.inheritClientSession(pk, cl))
	s.Clients.Add(cl)
	_, err := s.publishToClient(cl, sub, quotaPublish("a/b", 1, "5")) // delivered before the resend
	require.NoError(t, err)
	require.NoError(t, cl.ResendInflightMessages(true))

	type seen struct {
		payload string
		dup     bool
	}
	var got []seen
	var ids []uint16
	read := func() {
		pk, ok := p.next(time.Second)
		require.True(t, ok, "after %v", got)
		got = append(got, seen{string(pk.Payload), pk.FixedHeader.Dup})
		ids = append(ids, pk.PacketID)
	}
	read()
	read()
	_, ok := p.next(100 * time.Millisecond)
	require.False(t, ok, "more than Receive Maximum resent")
	for len(got) < 6 {
		require.NoError(t, s.processPacket(cl, quotaAck(ids[0])))
		ids = ids[1:]
		read()
	}
	require.Equal(t, []seen{{"0", true}, {"1", true}, {"2", true}, {"3", false}, {"4", false}, {"5", false}}, got)
	for _, id := range ids {
		require.NoError(t, s.processPacket(cl, quotaAck(id)))
	}
	require.Equal(t, 0, cl.State.Inflight.Len())
	require.Equal(t, int32(2), atomic.LoadInt32(&cl.State.Inflight.sendQuota))
}

// TestInflightNextImmediateWithWriters: NextImmediate took the map's read
// lock twice; a writer waiting between the two deadlocked both.
func TestInflightNextImmediateWithWriters(t *testing.T) {
	i := NewInflights()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for n := 0; n < 20000; n++ {
				i.NextImmediate()
			}
		}()
		go func() {
			defer wg.Done()
			for n := 0; n < 20000; n++ {
				i.Set(packets.Packet{PacketID: uint16(n%100 + 1), Expiry: -1})
				i.Delete(uint16(n%100 + 1))
			}
		}()
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("deadlock")
	}
}

// checkQuota checks the Inflight's quota invariants: the units held and
// free make the maximum, and a message waits only while none is free.
func checkQuota(t *testing.T, i *Inflight) {
	t.Helper()
	i.RLock()
	defer i.RUnlock()
	max := atomic.LoadInt32(&i.maximumSendQuota)
	q := atomic.LoadInt32(&i.sendQuota)
	require.Equal(t, max, q+int32(len(i.held)), "free %d + held %d", q, len(i.held))
	if len(i.pending) > 0 && !i.resending {
		require.Equal(t, int32(0), q, "%d waiting with quota free", len(i.pending))
	}
	for _, id := range i.pending {
		_, held := i.held[id]
		require.False(t, held)
		_, ok := i.internal[id]
		require.True(t, ok)
	}
}

// TestInflightQuotaConcurrentAdmitAndDelete: publishers admitting and
// deleters (acknowledgements, a hook dropping a delivery at encode, the
// expiry of waiting messages) at once, under -race; the invariants hold
// after every step and at the end nothing is lost.
func TestInflightQuotaConcurrentAdmitAndDelete(t *testing.T) {
	s := newServer()
	p := newQuotaPeer(t, s, "sub", 5, 4)
	in := p.cl.State.Inflight
	go func() { // the write loop's reader drains the wire
		for range p.wire {
		}
	}()
	var ids atomic.Uint32
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		g := g
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for n := 0; n < 2000; n++ {
				id := uint16(ids.Add(1)%60000 + 1)
				in.admit(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id})
				if rng.Intn(2) == 0 {
					in.Delete(id) // an ack, or a drop, of this one or (below) of another
				} else {
					in.Delete(uint16(rng.Intn(60000) + 1))
				}
				if n%100 == 0 {
					checkQuota(t, in)
				}
			}
		}()
	}
	wg.Wait()
	checkQuota(t, in)
	for _, pk := range in.GetAll(false) {
		in.Delete(pk.PacketID)
	}
	checkQuota(t, in)
	require.Equal(t, 0, in.Len())
	require.Equal(t, int32(4), atomic.LoadInt32(&in.sendQuota))
}

// TestInflightDeleteOfHeldReleases: a delivery deleted other than by its
// acknowledgement (a hook refusing it at encode, its expiry) gives its unit
// to the next one waiting, and a waiting one deleted leaves the queue.
func TestInflightDeleteOfHeldReleases(t *testing.T) {
	s := newServer()
	p := newQuotaPeer(t, s, "sub", 5, 1)
	in := p.cl.State.Inflight
	pub := func(id uint16) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a", PacketID: id}
	}
	_, pending := in.admit(pub(1))
	require.False(t, pending)
	p.cl.State.outbound <- &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a", PacketID: 1}
	for id := uint16(2); id <= 4; id++ {
		_, pending = in.admit(pub(id))
		require.True(t, pending)
	}
	pk, ok := p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, uint16(1), pk.PacketID)

	require.True(t, in.Delete(2)) // waiting: no quota moves
	checkQuota(t, in)
	require.True(t, in.Delete(1)) // held: 3 goes
	pk, ok = p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, uint16(3), pk.PacketID)
	checkQuota(t, in)
	require.Equal(t, []packets.Packet{pub(4)}, in.GetAll(true))
}

// TestInflightReleaseOutboundFull: a released message the client's
// outbound queue has no room for is dropped, counted and reported like a
// delivery publishToClient drops, and the unit passes on.
func TestInflightReleaseOutboundFull(t *testing.T) {
	s := newServer()
	s.Options.Capabilities.MaximumClientWritesPending = 1
	var dropped atomic.Int32
	require.NoError(t, s.AddHook(&dropCounter{n: &dropped}, nil))
	r, w := net.Pipe()
	defer r.Close()
	defer w.Close()
	cl := s.NewClient(w, "tcp", "sub", false) // no write loop: the queue stays full
	cl.State.Inflight.ResetSendQuota(1)
	in := cl.State.Inflight
	pub := func(id uint16) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id}
	}
	in.admit(pub(1))
	in.admit(pub(2))
	in.admit(pub(3))
	atomic.StoreInt64(&s.Info.Inflight, 3)
	cl.State.outbound <- new(packets.Packet) // full
	require.True(t, in.Delete(1))
	require.Equal(t, int32(2), dropped.Load())
	require.Equal(t, int64(2), atomic.LoadInt64(&s.Info.MessagesDropped))
	require.Equal(t, int64(1), atomic.LoadInt64(&s.Info.Inflight)) // (1 is the caller's to count)
	require.Equal(t, 0, in.Len())
	checkQuota(t, in)
	require.Equal(t, int32(1), atomic.LoadInt32(&in.sendQuota))
}

type dropCounter struct {
	HookBase
	n *atomic.Int32
}

func (h *dropCounter) ID() string { return "drop-counter" }
func (h *dropCounter) Provides(b byte) bool {
	return b == OnQosDropped
}
func (h *dropCounter) OnQosDropped(cl *Client, pk packets.Packet) { h.n.Add(1) }

// TestInflightQuotaNoLeak: many cycles of deliveries and every way a flow
// ends leave the whole quota and nothing in flight.
func TestInflightQuotaNoLeak(t *testing.T) {
	s := newServer()
	p := newQuotaPeer(t, s, "sub", 5, 2)
	go func() {
		for range p.wire {
		}
	}()
	in := p.cl.State.Inflight
	sub := packets.Subscription{Filter: "a/b", Qos: 2}
	for n := 0; n < 3000; n++ {
		_, err := s.publishToClient(p.cl, sub, quotaPublish("a/b", 1+byte(n%2), "x"))
		require.NoError(t, err)
		_, err = s.publishToClient(p.cl, sub, quotaPublish("a/b", 1+byte(n%2), "x"))
		require.NoError(t, err)
		_, err = s.publishToClient(p.cl, sub, quotaPublish("a/b", 1+byte(n%2), "x"))
		require.NoError(t, err)
		for len(in.GetAll(false)) > 0 {
			pk := in.GetAll(false)[0]
			switch {
			case pk.FixedHeader.Type == packets.Pubrel:
				require.NoError(t, s.processPacket(p.cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID}))
			case pk.FixedHeader.Qos == 1:
				require.NoError(t, s.processPacket(p.cl, quotaAck(pk.PacketID)))
			case n%4 == 1:
				require.NoError(t, s.processPacket(p.cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID, ReasonCode: packets.ErrQuotaExceeded.Code, ProtocolVersion: 5}))
			default:
				require.NoError(t, s.processPacket(p.cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID, ProtocolVersion: 5}))
			}
			checkQuota(t, in)
		}
	}
	require.Equal(t, 0, in.Len())
	require.Equal(t, int32(2), atomic.LoadInt32(&in.sendQuota))
}
