// SPDX-License-Identifier: MIT

package mqtt

import (
	"io"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// Before MQTT 5 only a client sends DISCONNECT (MQTT 3.1.1 §3.14): the
// server disconnects a 3.1.1 or 3.1 client by closing its connection,
// writing nothing, as it does when a session is taken over.
func TestDisconnectClientBeforeV5WritesNothing(t *testing.T) {
	for _, version := range []byte{3, 4} {
		s := newServer()
		cl, r, w := newTestClient()
		cl.Properties.ProtocolVersion = version
		done := make(chan error)
		go func() {
			err := s.DisconnectClient(cl, packets.ErrSessionTakenOver)
			_ = w.Close()
			done <- err
		}()
		buf, err := io.ReadAll(r) // ends as Stop closes the connection, before Stop returns
		require.NoError(t, err)
		require.Empty(t, buf, "version %d", version)
		require.ErrorIs(t, <-done, packets.ErrSessionTakenOver)
		require.True(t, cl.Closed())
		require.ErrorIs(t, cl.StopCause(), packets.ErrSessionTakenOver)
	}
}
