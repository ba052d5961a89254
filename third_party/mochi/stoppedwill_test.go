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

// connectWithWill writes on conn the CONNECT of client "dev" (MQTT 5, a
// clean start) with a will on will/dev.
func connectWithWill(t *testing.T, conn net.Conn) {
	t.Helper()
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "dev", Clean: true, Keepalive: 60,
			WillFlag: true, WillTopic: "will/dev", WillPayload: []byte("gone")}}
	buf := new(bytes.Buffer)
	require.NoError(t, connect.ConnectEncode(buf))
	_, err := conn.Write(buf.Bytes())
	require.NoError(t, err)
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
	connectWithWill(t, conn)
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

// holdDisconnect holds the DISCONNECT of client id "dev" as it is read,
// and hands its client to the test, until released.
type holdDisconnect struct {
	HookBase
	held    chan *Client
	release chan struct{}
}

func (h *holdDisconnect) ID() string           { return "hold-disconnect" }
func (h *holdDisconnect) Provides(b byte) bool { return b == OnPacketRead }
func (h *holdDisconnect) OnPacketRead(cl *Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Disconnect && cl.ID == "dev" {
		h.held <- cl
		<-h.release
	}
	return pk, nil
}

// TestNoWillAfterADisconnectTheServerStoppedFirst: a client's DISCONNECT
// (0x00) drops its will [MQTT-3.1.2-8], also when the server stopped the
// client (a kick, as Veil's re-enrolment does) between reading the
// DISCONNECT and handling it: the stop cause, kept first, is not the
// DISCONNECT's, and the read loop ends with it.
func TestNoWillAfterADisconnectTheServerStoppedFirst(t *testing.T) {
	s, addr := netServer(t)
	log := newEventLog()
	watcher, _ := dialNetPeer(t, s, addr, "watcher", "watcher", true, 0, 0, log)
	watcher.subscribe(t, "will/dev")
	h := &holdDisconnect{held: make(chan *Client, 1), release: make(chan struct{})}
	require.NoError(t, s.AddHook(h, nil))

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	connectWithWill(t, conn)
	ack := make([]byte, 64)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Read(ack) // the CONNACK
	require.NoError(t, err)

	_, err = conn.Write([]byte{0xe0, 0x00}) // DISCONNECT, normal
	require.NoError(t, err)
	cl := <-h.held
	cl.Stop(packets.ErrNotAuthorized)
	close(h.release)
	pk, ok := watcher.next(time.Second)
	require.False(t, ok, "a will published after the client's DISCONNECT: %s", describe(pk))
}
