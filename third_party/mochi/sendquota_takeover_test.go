// SPDX-License-Identifier: MIT

package mqtt

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// TestSessionTakeoverLateDelivery: a publisher's fan-out finds the session's
// client (Clients.Get) just before another connection takes the session
// over, and delivers to it just after: mochi writes the publisher's PUBACK
// before its fan-out, so a subscriber may well resume its session meanwhile.
// The delivery was stored in the previous client's in-flight messages after
// the new connection had taken their clone: never resent, lost for good. It
// follows the session to the new connection, after what is resent, with
// messages in flight at the takeover or without.
func TestSessionTakeoverLateDelivery(t *testing.T) {
	for _, inflight := range []int{0, 2} {
		s := newServer()
		old := newQuotaPeer(t, s, "sub", 5, 4)
		sub := packets.Subscription{Filter: "a/b", Qos: 1}
		var want []string
		for i := 0; i < inflight; i++ {
			_, err := s.publishToClient(old.cl, sub, quotaPublish("a/b", 1, string(rune('0'+i))))
			require.NoError(t, err)
			_, ok := old.next(time.Second)
			require.True(t, ok)
			want = append(want, string(rune('0'+i)))
		}
		old.cl.Stop(nil) // the subscriber went away; its session stays
		go func() {
			for range old.wire {
			}
		}()

		pk := packets.Packet{
			ProtocolVersion: 5,
			Connect:         packets.ConnectParams{ClientIdentifier: "sub", Keepalive: 60},
			Properties:      packets.Properties{ReceiveMaximum: 4, SessionExpiryInterval: 600},
		}
		p := takeOverPeer(t, s, pk)
		cl := p.cl
		require.True(t, s.inheritClientSession(pk, cl))

		// The fan-out that found the previous client before the takeover.
		_, err := s.publishToClient(old.cl, sub, quotaPublish("a/b", 1, "late"))
		require.NoError(t, err, "with %d in flight", inflight)
		want = append(want, "late")

		s.Clients.Add(cl)
		require.NoError(t, cl.ResendInflightMessages(true))
		var got []string
		for len(got) < len(want) {
			pk, ok := p.next(time.Second)
			require.True(t, ok, "with %d in flight: got %v, want %v", inflight, got, want)
			got = append(got, string(pk.Payload))
			require.NoError(t, s.processPacket(cl, quotaAck(pk.PacketID)))
		}
		require.Equal(t, want, got, "with %d in flight", inflight)
		require.Equal(t, 0, cl.State.Inflight.Len(), "with %d in flight", inflight)
		require.Equal(t, 0, old.cl.State.Inflight.Len(), "with %d in flight", inflight)
	}
}

// TestSessionTakeoverConcurrentDeliveries: a publisher delivers to the
// session's previous client while another connection takes the session
// over: each delivery, before the takeover or after, reaches the new
// connection, in order, and the new client's in-flight messages are set
// before a delivery is handed on to it (under -race).
func TestSessionTakeoverConcurrentDeliveries(t *testing.T) {
	for run := 0; run < 20; run++ {
		s := newServer()
		old := newQuotaPeer(t, s, "sub", 5, 4)
		sub := packets.Subscription{Filter: "a/b", Qos: 1}
		_, err := s.publishToClient(old.cl, sub, quotaPublish("a/b", 1, "0"))
		require.NoError(t, err)
		_, ok := old.next(time.Second)
		require.True(t, ok)
		old.cl.Stop(nil)
		go func() {
			for range old.wire {
			}
		}()
		pk := packets.Packet{
			ProtocolVersion: 5,
			Connect:         packets.ConnectParams{ClientIdentifier: "sub", Keepalive: 60},
			Properties:      packets.Properties{ReceiveMaximum: 4, SessionExpiryInterval: 600},
		}
		p := takeOverPeer(t, s, pk)
		cl := p.cl
		const n = 20
		published := make(chan struct{})
		go func() { // the fan-out found the previous client
			defer close(published)
			for i := 1; i <= n; i++ {
				_, _ = s.publishToClient(old.cl, sub, quotaPublish("a/b", 1, fmt.Sprint(i)))
			}
		}()
		require.True(t, s.inheritClientSession(pk, cl))
		s.Clients.Add(cl)
		<-published
		require.NoError(t, cl.ResendInflightMessages(true))
		var got, want []string
		for i := 0; i <= n; i++ {
			want = append(want, fmt.Sprint(i))
		}
		for len(got) < len(want) {
			pk, ok := p.next(time.Second)
			require.True(t, ok, "run %d: got %v, want %v", run, got, want)
			got = append(got, string(pk.Payload))
			require.NoError(t, s.processPacket(cl, quotaAck(pk.PacketID)))
		}
		require.Equal(t, want, got, "run %d", run)
		require.Equal(t, 0, cl.State.Inflight.Len(), "run %d", run)
	}
}

// takeOverPeer is a new connection, through a pipe, for a session already
// in s, that attachClient has not yet let inherit it.
func takeOverPeer(t *testing.T, s *Server, pk packets.Packet) *quotaPeer {
	t.Helper()
	r, w := net.Pipe()
	cl := s.NewClient(w, "tcp", pk.Connect.ClientIdentifier, false)
	cl.ParseConnect("tcp", pk)
	go cl.WriteLoop()
	p := &quotaPeer{cl: cl, r: r, w: w, wire: make(chan packets.Packet, 100), errs: make(chan error, 1)}
	t.Cleanup(func() { cl.Stop(nil); _ = w.Close(); _ = r.Close() })
	reader := s.NewClient(r, "tcp", "peer", false)
	reader.Properties.ProtocolVersion = pk.ProtocolVersion
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
	return p
}
