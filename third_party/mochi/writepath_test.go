// SPDX-License-Identifier: MIT

package mqtt

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// The write loop copies each packet out of the queue before the pool may
// hand it to the next delivery: packets queued back to back, each in a
// pooled packet that the one before it may have freed, are written each
// as it was queued, in order. (What the pool holds is not read here: a
// packet put back is anyone's.)
func TestWriteLoopWritesEachQueuedPacketAsQueued(t *testing.T) {
	cl, r, _ := newTestClient()
	defer cl.Stop(nil)
	cl.Properties.ProtocolVersion = 4
	var want bytes.Buffer
	go func() {
		for i := 0; i < 200; i++ {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte("message " + strconv.Itoa(i))}
			cl.State.outbound <- getOutbound(pk)
			atomic.AddInt32(&cl.State.outboundQty, 1)
		}
	}()
	for i := 0; i < 200; i++ {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte("message " + strconv.Itoa(i)), ProtocolVersion: 4}
		require.NoError(t, pk.PublishEncode(&want))
	}
	got := make([]byte, want.Len())
	require.NoError(t, r.SetReadDeadline(time.Now().Add(5*time.Second))) // a packet written empty is not written at all
	_, err := io.ReadFull(r, got)
	require.NoError(t, err)
	require.Equal(t, want.String(), string(got))
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

// A clone of the in-flight map (a session taken over) holds packets of its
// own: what the original deletes, and the pool then hands to its next
// deliveries, leaves the clone's intact.
func TestInflightPacketsPooled(t *testing.T) {
	i := NewInflights()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1, TopicName: "a/b", Payload: []byte("first")}
	require.True(t, i.Set(pk))
	c := i.Clone()
	require.True(t, i.Delete(1))
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
