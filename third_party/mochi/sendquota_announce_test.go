// SPDX-License-Identifier: MIT

package mqtt

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// qosPublishGate blocks OnQosPublish for the payload "gate" until gate is
// closed, and notes when it returned.
type qosPublishGate struct {
	HookBase
	entered  chan struct{}
	gate     chan struct{}
	returned atomic.Bool
}

func (h *qosPublishGate) ID() string           { return "qos-publish-gate" }
func (h *qosPublishGate) Provides(b byte) bool { return b == OnQosPublish }
func (h *qosPublishGate) OnQosPublish(cl *Client, pk packets.Packet, sent int64, resends int) {
	if string(pk.Payload) == "gate" {
		close(h.entered)
		<-h.gate
		h.returned.Store(true)
	}
}

// TestSendQuotaQosPublishBeforeWrite: OnQosPublish (where a store records
// the delivery, and a hook decides what it keeps of it) is called for a
// delivery before it can be written, as for one sent at once: a waiting
// delivery released by a PUBACK meanwhile was written, and could be
// acknowledged (OnQosComplete), before its OnQosPublish, which then stored
// a message no longer in flight (resent after a restart).
func TestSendQuotaQosPublishBeforeWrite(t *testing.T) {
	s := newServer()
	h := &qosPublishGate{entered: make(chan struct{}), gate: make(chan struct{})}
	require.NoError(t, s.AddHook(h, nil))
	p := newQuotaPeer(t, s, "sub", 5, 1)
	sub := packets.Subscription{Filter: "a/b", Qos: 1}
	_, err := s.publishToClient(p.cl, sub, quotaPublish("a/b", 1, "0"))
	require.NoError(t, err)
	pk, ok := p.next(time.Second)
	require.True(t, ok)

	published := make(chan error, 1)
	go func() {
		_, err := s.publishToClient(p.cl, sub, quotaPublish("a/b", 1, "gate")) // waits for quota
		published <- err
	}()
	<-h.entered
	require.NoError(t, s.processPacket(p.cl, quotaAck(pk.PacketID))) // releases it
	next, ok := p.next(200 * time.Millisecond)
	returned := h.returned.Load()
	close(h.gate)
	require.NoError(t, <-published)
	if ok {
		require.True(t, returned, fmt.Sprintf("PUBLISH %q written before its OnQosPublish returned", next.Payload))
	} else {
		next, ok = p.next(time.Second)
		require.True(t, ok, "not released once its OnQosPublish returned")
	}
	require.Equal(t, "gate", string(next.Payload))
	require.NoError(t, s.processPacket(p.cl, quotaAck(next.PacketID)))
	require.Equal(t, 0, p.cl.State.Inflight.Len())
	require.Equal(t, int32(1), atomic.LoadInt32(&p.cl.State.Inflight.sendQuota))
}
