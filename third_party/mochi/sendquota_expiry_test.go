// SPDX-License-Identifier: MIT

package mqtt

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// TestSendQuotaExpiredAfterSending: a message the client was sent, and has
// not acknowledged, still counts against its Receive Maximum when its
// expiry passes ([MQTT-3.3.2-5]: onward delivery has started; the unit
// returns with the PUBACK, [MQTT-3.3.4-9]). Its expiry handed its unit to the
// next message: two unacknowledged PUBLISH packets with Receive Maximum 1.
func TestSendQuotaExpiredAfterSending(t *testing.T) {
	s := newServer()
	p := newQuotaPeer(t, s, "sub", 5, 1)
	sub := packets.Subscription{Filter: "a/b", Qos: 1}
	now := time.Now().Unix()
	first := quotaPublish("a/b", 1, "0")
	first.ProtocolVersion = 5
	first.Expiry = now + 5
	_, err := s.publishToClient(p.cl, sub, first)
	require.NoError(t, err)
	_, err = s.publishToClient(p.cl, sub, quotaPublish("a/b", 1, "1"))
	require.NoError(t, err)
	pk, ok := p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, "0", string(pk.Payload))

	s.clearExpiredInflights(now + 10)
	next, ok := p.next(200 * time.Millisecond)
	require.False(t, ok, "PUBLISH %q sent with %q unacknowledged (Receive Maximum 1)", next.Payload, pk.Payload)

	require.NoError(t, s.processPacket(p.cl, quotaAck(pk.PacketID)))
	next, ok = p.next(time.Second)
	require.True(t, ok)
	require.Equal(t, "1", string(next.Payload))
	require.NoError(t, s.processPacket(p.cl, quotaAck(next.PacketID)))
	require.Equal(t, 0, p.cl.State.Inflight.Len())
	require.Equal(t, int32(1), atomic.LoadInt32(&p.cl.State.Inflight.sendQuota))
}
