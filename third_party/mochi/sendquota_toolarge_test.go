// SPDX-License-Identifier: MIT

package mqtt

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// TestSendQuotaPacketTooLarge: a PUBLISH larger than the client's Maximum
// Packet Size is discarded, and the server behaves as if it had completed
// sending it ([MQTT-3.1.2-25]): its unit of send quota comes back. It used
// to stay held: after Receive Maximum such messages the subscriber got
// nothing more, for good.
func TestSendQuotaPacketTooLarge(t *testing.T) {
	s := newServer()
	p := newQuotaPeer(t, s, "sub", 5, 2)
	p.cl.Properties.Props.MaximumPacketSize = 64
	sub := packets.Subscription{Filter: "a/b", Qos: 1}
	big := strings.Repeat("x", 200)
	for i := 0; i < 2; i++ {
		_, err := s.publishToClient(p.cl, sub, quotaPublish("a/b", 1, big))
		require.NoError(t, err)
	}
	_, err := s.publishToClient(p.cl, sub, quotaPublish("a/b", 1, "small"))
	require.NoError(t, err)

	pk, ok := p.next(time.Second)
	require.True(t, ok, "stalled: two oversized messages hold the whole send quota")
	require.Equal(t, "small", string(pk.Payload))
	require.NoError(t, s.processPacket(p.cl, quotaAck(pk.PacketID)))
	require.Eventually(t, func() bool { return p.cl.State.Inflight.Len() == 0 }, time.Second, time.Millisecond)
	require.Equal(t, int32(2), atomic.LoadInt32(&p.cl.State.Inflight.sendQuota))
	require.Equal(t, int64(0), atomic.LoadInt64(&s.Info.Inflight))
}

// TestSendQuotaResendPacketTooLarge: an oversized message in a resumed
// session is discarded, not resent for ever: the resend went no further
// than it and dropped the connection, at every reconnection.
func TestSendQuotaResendPacketTooLarge(t *testing.T) {
	s := newServer()
	p := newQuotaPeer(t, s, "sub", 5, 0)
	p.cl.Properties.Props.MaximumPacketSize = 64
	require.True(t, p.cl.State.Inflight.Set(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "a/b", Payload: []byte(strings.Repeat("x", 200)), PacketID: 1, Created: 1,
	}))
	require.True(t, p.cl.State.Inflight.Set(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "a/b", Payload: []byte("small"), PacketID: 2, Created: 2,
	}))
	atomic.AddInt64(&s.Info.Inflight, 2)
	require.NoError(t, p.cl.ResendInflightMessages(true))
	pk, ok := p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, "small", string(pk.Payload))
	_, ok = p.cl.State.Inflight.Get(1)
	require.False(t, ok, "the oversized message is still in flight")
	require.Equal(t, int64(1), atomic.LoadInt64(&s.Info.Inflight))
}
