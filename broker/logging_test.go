package broker_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/broker"
)

const loggedPassword = "an-very-secret-password"

// withPassword is a CONNECT packet carrying loggedPassword.
func withPassword() packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "an-phone",
			UsernameFlag: true, Username: []byte("an"), PasswordFlag: true, Password: []byte(loggedPassword)}}
}

func assertNoPassword(t *testing.T, logged string) {
	t.Helper()
	if strings.Contains(logged, loggedPassword) || strings.Contains(logged, base64.StdEncoding.EncodeToString([]byte(loggedPassword))) {
		t.Fatalf("the password is in the log:\n%s", logged)
	}
}

// TestMochiLogNeverShowsAPassword: whatever key mochi logs a packet under
// ("packet", "pk", one it adds later), the log has no password, while
// strings and errors stay. mochi logs a packet it failed to process under
// "pk": a client's second CONNECT, at --log-level debug, put its password
// in the log.
func TestMochiLogNeverShowsAPassword(t *testing.T) {
	t.Run("any key", func(t *testing.T) {
		var out syncBuffer
		log := broker.MochiLogger(&out)
		log.Warn("error processing packet", "error", errors.New("second connect"), "client", "an-phone", "pk", withPassword(),
			"packet", withPassword(), "anything", withPassword(), "group", slog.GroupValue(slog.Any("pk", withPassword())))
		logged := out.String()
		assertNoPassword(t, logged)
		if !strings.Contains(logged, "second connect") || !strings.Contains(logged, `"client":"an-phone"`) {
			t.Fatalf("the error and the client id are not logged:\n%s", logged)
		}
	})
	t.Run("second connect", func(t *testing.T) {
		var out syncBuffer
		srv := mqtt.New(&mqtt.Options{Logger: broker.MochiLogger(&out)})
		if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
			t.Fatal(err)
		}
		l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
		if err := srv.AddListener(l); err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		var b bytes.Buffer
		pk := withPassword()
		if err := pk.ConnectEncode(&b); err != nil {
			t.Fatal(err)
		}
		conn, err := net.Dial("tcp", l.Address())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write(b.Bytes()); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, make([]byte, 4)); err != nil { // CONNACK
			t.Fatal(err)
		}
		_, _ = conn.Write(b.Bytes()) // a second CONNECT: a protocol violation mochi logs
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.Copy(io.Discard, conn) // until mochi closes it
		time.Sleep(100 * time.Millisecond)
		logged := out.String()
		assertNoPassword(t, logged)
		if !strings.Contains(logged, "error processing packet") {
			t.Fatalf("mochi's warning is not in the log:\n%s", logged)
		}
	})
}
