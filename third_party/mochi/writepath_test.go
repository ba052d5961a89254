// SPDX-License-Identifier: MIT

package mqtt

import (
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// The write loop empties each packet it takes from the queue before the
// pool hands it out again: a queued packet never keeps a payload alive,
// nor reaches two deliveries.
func TestWriteLoopEmptiesTheQueuedPacket(t *testing.T) {
	cl, r, _ := newTestClient()
	defer cl.Stop(nil)
	pk := *packets.TPacketData[packets.Publish].Get(packets.TPublishBasic).Packet
	queued := getOutbound(pk)
	require.Equal(t, pk.Payload, queued.Payload)
	cl.State.outbound <- queued

	buf := make([]byte, 1)
	_, err := io.ReadFull(r, buf) // written: taken and emptied before
	require.NoError(t, err)
	require.Equal(t, packets.Packet{}, *queued)
}

// BenchmarkPublishToClient: one delivery to a connected client, from the
// fan-out to the bytes on the wire (and, at QoS 1, its PUBACK), with the
// allocations of every goroutine involved.
func BenchmarkPublishToClient(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run("qos="+string('0'+qos), func(b *testing.B) {
			s := newServer()
			r, w := net.Pipe()
			go func() { _, _ = io.Copy(io.Discard, r) }()
			cl := s.NewClient(w, "tcp", "subscriber", false)
			cl.Properties.ProtocolVersion = 5
			go cl.WriteLoop()
			defer cl.Stop(nil)
			sub := packets.Subscription{Filter: "a/b/c", Qos: qos}
			pk := *packets.TPacketData[packets.Publish].Get(packets.TPublishBasic).Packet
			pk.FixedHeader.Qos = qos
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out, err := s.publishToClient(cl, sub, pk)
				if err != nil {
					b.Fatal(err)
				}
				if qos > 0 {
					_ = s.processPuback(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: out.PacketID})
				}
				for atomic.LoadInt32(&cl.State.outboundQty) > 64 {
					runtime.Gosched()
				}
			}
		})
	}
}

// A delivery deleted from the in-flight map goes back to the pool emptied
// (keeping no payload alive), and a clone of the map (a session taken over)
// holds packets of its own: what the original deletes, or reuses, leaves
// the clone's intact.
func TestInflightPacketsPooled(t *testing.T) {
	i := NewInflights()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1, TopicName: "a/b", Payload: []byte("first")}
	require.True(t, i.Set(pk))
	c := i.Clone()
	kept := i.internal[1]
	require.True(t, i.Delete(1))
	require.Equal(t, packets.Packet{}, *kept)
	for j := 0; j < 100; j++ {
		other := pk
		other.PacketID, other.Payload = 2, []byte("other")
		require.True(t, i.Set(other))
		require.True(t, i.Delete(2))
	}
	got, ok := c.Get(1)
	require.True(t, ok)
	require.Equal(t, pk, got)
}
