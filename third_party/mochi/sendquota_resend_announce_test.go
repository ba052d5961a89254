// SPDX-License-Identifier: MIT

package mqtt

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// qosAnnouncer records the packet ids OnQosPublish announces for client id,
// and whether the packet was written (encoded) before its announcement.
type qosAnnouncer struct {
	HookBase
	id        string
	mu        sync.Mutex
	announced []uint16
	written   map[uint16]bool
	early     []uint16 // written before announced
}

func (h *qosAnnouncer) ID() string { return "qos-announcer" }
func (h *qosAnnouncer) Provides(b byte) bool {
	return b == OnQosPublish || b == OnPacketEncode
}
func (h *qosAnnouncer) OnQosPublish(cl *Client, pk packets.Packet, _ int64, _ int) {
	if cl.ID != h.id || pk.FixedHeader.Type != packets.Publish {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.announced = append(h.announced, pk.PacketID)
}
func (h *qosAnnouncer) OnPacketEncode(cl *Client, pk packets.Packet) packets.Packet {
	if cl.ID == h.id && pk.FixedHeader.Type == packets.Publish {
		h.mu.Lock()
		if !slices.Contains(h.announced, pk.PacketID) {
			h.early = append(h.early, pk.PacketID)
		}
		h.mu.Unlock()
	}
	return pk
}

// TestSendQuotaResendAnnouncesWhatItHoldsBack: a session resumed with five
// deliveries sent and unacknowledged under a connection without a quota,
// on a connection with Receive Maximum 2. The resend writes two and holds
// three back for the quota; all five are announced to OnQosPublish, each
// before it is written. A store that ignored a delivery's announcement on
// the previous connection (it reached that connection during the take-over)
// records it here: the quota's return writes it without a hook.
func TestSendQuotaResendAnnouncesWhatItHoldsBack(t *testing.T) {
	s := newServer()
	h := &qosAnnouncer{id: "sub"}
	require.NoError(t, s.AddHook(h, nil))
	old := newQuotaPeer(t, s, "sub", 5, 0)
	sub := packets.Subscription{Filter: "a/b", Qos: 1}
	for i := 0; i < 5; i++ {
		_, err := s.publishToClient(old.cl, sub, quotaPublish("a/b", 1, fmt.Sprint(i)))
		require.NoError(t, err)
	}
	for i := 0; i < 5; i++ {
		_, ok := old.next(time.Second)
		require.True(t, ok)
	}
	go func() { // the DISCONNECT the take-over writes to the old connection
		for range old.wire {
		}
	}()
	h.mu.Lock()
	h.announced = nil
	h.mu.Unlock()

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
	go func() { // the new connection's peer, reading what it is sent
		reader := s.NewClient(r, "tcp", "peer", false)
		reader.Properties.ProtocolVersion = 5
		for {
			fh := new(packets.FixedHeader)
			if reader.ReadFixedHeader(fh) != nil {
				return
			}
			if _, err := reader.ReadPacket(fh); err != nil {
				return
			}
		}
	}()

	require.True(t, s.inheritClientSession(pk, cl))
	s.Clients.Add(cl)
	require.NoError(t, cl.ResendInflightMessages(true))
	require.Len(t, cl.State.Inflight.GetAll(true), 3, "held back for the quota")

	h.mu.Lock()
	defer h.mu.Unlock()
	got := slices.Clone(h.announced)
	slices.Sort(got)
	require.Equal(t, []uint16{1, 2, 3, 4, 5}, got, "announced by the resend")
	require.Empty(t, h.early, "written before announced")
}
