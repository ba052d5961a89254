// SPDX-License-Identifier: MIT

package mqtt

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// holdEstablished holds the OnSessionEstablished of the connection whose
// remote address is set (after its CONNACK, before its read loop) until
// released.
type holdEstablished struct {
	HookBase
	mu      sync.Mutex
	remote  string
	held    chan struct{}
	release chan struct{}
}

func (h *holdEstablished) ID() string           { return "hold-established" }
func (h *holdEstablished) Provides(b byte) bool { return b == OnSessionEstablished }
func (h *holdEstablished) OnSessionEstablished(cl *Client, _ packets.Packet) {
	h.mu.Lock()
	mine := cl.Net.Remote == h.remote
	h.mu.Unlock()
	if mine {
		close(h.held)
		<-h.release
	}
}

// TestWillOfAConnectionStoppedBetweenPackets: a connection the server
// stops between two of its packets (here a takeover, before its read loop
// began) ends with its will, as one stopped while it waits for a packet
// does. Client.Read returned nil when it found itself closed, and
// attachClient took that for the client's DISCONNECT and dropped the will.
func TestWillOfAConnectionStoppedBetweenPackets(t *testing.T) {
	s, addr := netServer(t)
	log := newEventLog()
	watcher, _ := dialNetPeer(t, s, addr, "watcher", "watcher", true, 0, 0, log)
	watcher.subscribe(t, "will/dev")

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	h := &holdEstablished{remote: conn.LocalAddr().String(), held: make(chan struct{}), release: make(chan struct{})}
	require.NoError(t, s.AddHook(h, nil))
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "dev", Clean: true, Keepalive: 60,
			WillFlag: true, WillTopic: "will/dev", WillPayload: []byte("gone")}}
	buf := new(bytes.Buffer)
	require.NoError(t, connect.ConnectEncode(buf))
	_, err = conn.Write(buf.Bytes())
	require.NoError(t, err)
	select {
	case <-h.held:
	case <-time.After(5 * time.Second):
		t.Fatal("the first connection was not established")
	}

	dialNetPeer(t, s, addr, "new", "dev", true, 0, 0, log) // stops the first connection
	close(h.release)
	pk, ok := watcher.next(5 * time.Second)
	require.True(t, ok && pk.FixedHeader.Type == packets.Publish && string(pk.Payload) == "gone",
		"the stopped connection's will was not published: got %s", describe(pk))
}
