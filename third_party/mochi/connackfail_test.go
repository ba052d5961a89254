// SPDX-License-Identifier: MIT

package mqtt

import (
	"bytes"
	"net"
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// countEnds counts OnDisconnect calls, and those that end the session.
type countEnds struct {
	HookBase
	ends, expired atomic.Int32
}

func (h *countEnds) ID() string           { return "count-ends" }
func (h *countEnds) Provides(b byte) bool { return b == OnDisconnect }
func (h *countEnds) OnDisconnect(_ *Client, _ error, expire bool) {
	h.ends.Add(1)
	if expire {
		h.expired.Add(1)
	}
}

// TestConnectionEndingAtItsConnack: a connection whose CONNACK cannot be
// written (the client gone right after its CONNECT) ends as any other once
// its session is established: the hooks are told (OnDisconnect), and a
// clean session is removed. It returned at once: the client stayed under
// its id, a clean one until the server's maximum session expiry (a week in
// Veil), with whatever the hooks kept for it.
func TestConnectionEndingAtItsConnack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		expiry uint32
	}{{"clean session", 0}, {"session that outlives it", 600}} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(&Options{Logger: logger})
			require.NoError(t, s.AddHook(new(AllowHook), nil))
			h := new(countEnds)
			require.NoError(t, s.AddHook(h, nil))
			server, client := net.Pipe()
			done := make(chan error, 1)
			go func() { done <- s.EstablishConnection("tcp", server) }()

			connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
				Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "dev", Clean: tc.expiry == 0, Keepalive: 60},
				Properties: packets.Properties{SessionExpiryInterval: tc.expiry, SessionExpiryIntervalFlag: tc.expiry > 0}}
			buf := new(bytes.Buffer)
			require.NoError(t, connect.ConnectEncode(buf))
			_, err := client.Write(buf.Bytes())
			require.NoError(t, err)
			require.NoError(t, client.Close()) // before reading the CONNACK: its write fails

			require.ErrorContains(t, <-done, "ack connection packet")
			require.Equal(t, int32(1), h.ends.Load(), "OnDisconnect calls")
			_, held := s.Clients.Get("dev")
			if tc.expiry == 0 {
				require.False(t, held, "the clean session's client stayed under its id")
				require.Equal(t, int32(1), h.expired.Load())
			} else {
				require.True(t, held, "the session that outlives its connection was removed")
				require.Equal(t, int32(0), h.expired.Load())
			}
		})
	}
}
