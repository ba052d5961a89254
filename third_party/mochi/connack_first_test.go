// SPDX-License-Identifier: MIT

package mqtt

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// publishDuringConnack delivers msg to the subscribers of its topic while
// the CONNACK of client id is encoded, once armed: after the session is
// resumed (Clients.Add), before the CONNACK is written. It then gives the
// write loop time to write the delivery first.
type publishDuringConnack struct {
	HookBase
	s       *Server
	id      string
	msg     packets.Packet
	armed   atomic.Bool
	written chan struct{}
}

func (h *publishDuringConnack) ID() string { return "publish-during-connack" }
func (h *publishDuringConnack) Provides(b byte) bool {
	return b == OnPacketEncode || b == OnPacketSent
}

func (h *publishDuringConnack) OnPacketEncode(cl *Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && cl.ID == h.id && h.armed.CompareAndSwap(true, false) {
		h.s.publishToSubscribers(h.msg)
		select {
		case <-h.written:
		case <-time.After(50 * time.Millisecond):
		}
	}
	return pk
}

func (h *publishDuringConnack) OnPacketSent(cl *Client, pk packets.Packet, b []byte) {
	if pk.FixedHeader.Type == packets.Publish && cl.ID == h.id && string(pk.Payload) == string(h.msg.Payload) {
		select {
		case h.written <- struct{}{}:
		default:
		}
	}
}

// TestSessionResumeConnackFirst: a delivery to a session that a new
// connection resumes, made after the session is the new connection's and
// before its CONNACK is written, goes out after the CONNACK ([MQTT-3.2.0-1]:
// the first packet from the server is the CONNACK). mochi started the write
// loop before the CONNACK: a delivery queued meanwhile could be written
// first (paho.golang fails its Connect on it). With nothing in flight at QoS
// 1 (nothing holds such a delivery back before the resend), and at QoS 0
// with messages in flight (a QoS 0 delivery never waits).
func TestSessionResumeConnackFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		qos      byte
		inflight bool
	}{{"qos 1, nothing in flight", 1, false}, {"qos 0, a message in flight", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := netServer(t)
			h := &publishDuringConnack{s: s, id: "sub", msg: quotaPublish("t/0", tc.qos, "during"), written: make(chan struct{}, 1)}
			require.NoError(t, s.AddHook(h, nil))
			log := newEventLog()
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("event log:\n%s", log)
				}
			})
			old, _ := dialNetPeer(t, s, addr, "old", "sub", true, 3, 600, log)
			old.subscribe(t, "t/+")
			if tc.inflight {
				s.publishToSubscribers(quotaPublish("t/0", 1, "before"))
				require.Equal(t, "before", string(old.expect(t, packets.Publish).Payload))
			} else {
				old.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
				for range old.wire {
				}
			}

			h.armed.Store(true)
			cur, ack := dialNetPeer(t, s, addr, "new", "sub", false, 3, 600, log) // fails unless the CONNACK comes first
			require.True(t, ack.SessionPresent)
			want := map[string]bool{"during": true}
			if tc.inflight {
				want["before"] = true
			}
			for len(want) > 0 {
				pk := cur.expect(t, packets.Publish)
				require.True(t, want[string(pk.Payload)], "unexpected %s", describe(pk))
				delete(want, string(pk.Payload))
			}
		})
	}
}
