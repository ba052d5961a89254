package hooks_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/policies"
)

// A will with a delay is decided when it is due, on the rights of that
// moment: sent after its delay when nothing changed, never when the right
// was revoked meanwhile or the client came back to its session, at once
// when the client came back with a clean start (its session ended).
func TestDelayedWillDecidedWhenDue(t *testing.T) {
	for _, c := range []struct {
		name     string
		meantime func(t *testing.T, e *policies.Engine, addr string)
		want     bool // received after the delay
		early    bool // received at once
	}{
		{"nothing changed", nil, true, false},
		{"revoked during the delay", func(t *testing.T, e *policies.Engine, _ string) {
			deny := mayReset
			deny.Effect = "deny"
			must(t, e.PutPolicy("an", deny))
		}, false, false},
		{"back to the session", func(t *testing.T, _ *policies.Engine, addr string) {
			dialSession(t, addr, "doctor-will", "doctor", "doctor", 60, nil)
		}, false, false},
		{"back with a clean start", func(t *testing.T, _ *policies.Engine, addr string) {
			dialSession(t, addr, "doctor-will", "doctor", "doctor", 0, nil)
		}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, addr, owner, conn := delayedWillSetup(t)
			_ = conn.Close() // no DISCONNECT: the will is due in a second
			dropped := time.Now()
			time.Sleep(200 * time.Millisecond)
			if c.meantime != nil {
				c.meantime(t, e, addr)
			}
			// Before the delay is over: half a second after the drop, or as
			// soon as an early will arrived (by 0.8 s at the latest).
			for c.early && owner.n.Load() == 0 && time.Since(dropped) < 800*time.Millisecond {
				time.Sleep(10 * time.Millisecond)
			}
			if !c.early {
				time.Sleep(time.Until(dropped.Add(500 * time.Millisecond)))
			}
			if got := owner.n.Load() > 0; got != c.early {
				t.Fatalf("before the delay was over: will received = %v, want %v", got, c.early)
			}
			time.Sleep(time.Until(dropped.Add(2 * time.Second)))
			if got := owner.n.Load(); got != map[bool]int64{true: 1, false: 0}[c.want] {
				t.Fatalf("after the delay: %d wills received, want %v", got, c.want)
			}
		})
	}
}

// A client that takes over its own session (a reconnect the broker had not
// noticed as a drop) must not have its delayed will sent [MQTT-3.1.3-9].
func TestDelayedWillCancelledByTakeover(t *testing.T) {
	_, addr, owner, conn := delayedWillSetup(t)
	defer conn.Close()
	// The same client comes back on a new connection, resuming its session,
	// before the broker saw the old one drop.
	dialSession(t, addr, "doctor-will", "doctor", "doctor", 60, nil)
	time.Sleep(2500 * time.Millisecond)
	if n := owner.n.Load(); n != 0 {
		t.Fatalf("%d delayed will(s) published though the client is connected to its session again", n)
	}
}

// A connection that resumed the session and then ended it (session
// expiry 0) still cancelled the old connection's delayed will, whether
// the old connection's will came before the new one established the
// session or after (mochi stops the old connection first).
func TestDelayedWillCancelledByResumeThatEnds(t *testing.T) {
	_, addr, owner, conn := delayedWillSetup(t)
	defer conn.Close()
	b := dialSession(t, addr, "doctor-will", "doctor", "doctor", 60, nil, func(c *paho.Connect) { c.Properties = nil })
	time.Sleep(200 * time.Millisecond)
	_ = b.Disconnect(&paho.Disconnect{})
	time.Sleep(2300 * time.Millisecond)
	if n := owner.n.Load(); n != 0 {
		t.Fatalf("%d delayed will(s) of the taken-over connection published after the resuming one's session ended", n)
	}
}

// delayedWillSetup serves the household where the doctor may command a
// reset, with an (the owner) counting what reaches the thermostat's
// commands, and connects the doctor with a will on the reset, due a second
// after it drops. The connection is returned open.
func delayedWillSetup(t *testing.T) (*policies.Engine, string, *counter, net.Conn) {
	t.Helper()
	e, creds := household(t)
	must(t, e.PutPolicy("an", mayReset))
	_, addr, _ := serve(t, e, creds)
	owner := new(counter)
	an := dialCounting(t, addr, "an-sub", "an", "an", owner)
	subscribe(t, an, "things/thermo-1/cmd/#")
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	delay, expiry := uint32(1), uint32(60)
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "doctor-will", Username: "doctor", UsernameFlag: true,
		Password: []byte("doctor"), PasswordFlag: true, CleanStart: true, KeepAlive: 30,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		WillMessage:    &paho.WillMessage{Topic: resetTopic, Payload: []byte(`{"reset":true}`), QoS: 1},
		WillProperties: &paho.WillProperties{WillDelayInterval: &delay}}); err != nil {
		t.Fatal(err)
	}
	return e, addr, owner, conn
}

// resetTopic is the command the doctor may send (mayReset).
const resetTopic = "things/thermo-1/cmd/reset"

var mayReset = policies.Policy{ID: "doctor-reset", Priority: 40, Effect: "allow", Subjects: []string{"role:doctor"},
	Resources: []string{"things/+/cmd/reset"}, Actions: []policies.Action{policies.ActCommand}}

// An MQTT 3.1.1 client whose QoS 1 publish is refused is disconnected (it
// has no reason codes), and the server closing its connection publishes
// its will, decided under its rights as any will is [MQTT-3.1.2-8]: the
// connection did not end with the client's DISCONNECT.
func TestWillOfA311ClientDisconnectedForARefusedPublish(t *testing.T) {
	e, creds := household(t)
	must(t, e.PutPolicy("an", mayReset))
	_, addr, _ := serve(t, e, creds)
	owner := new(counter)
	subscribe(t, dialCounting(t, addr, "an-sub", "an", "an", owner), "things/thermo-1/cmd/#")

	conn, err := net.Dial("tcp", addr)
	must(t, err)
	defer conn.Close()
	send := func(pk packets.Packet) {
		t.Helper()
		var b bytes.Buffer
		pk.ProtocolVersion = 4
		switch pk.FixedHeader.Type {
		case packets.Connect:
			must(t, pk.ConnectEncode(&b))
		default:
			must(t, pk.PublishEncode(&b))
		}
		_, err := conn.Write(b.Bytes())
		must(t, err)
	}
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{
		ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "doctor-311",
		Username: []byte("doctor"), UsernameFlag: true, Password: []byte("doctor"), PasswordFlag: true,
		WillFlag: true, WillTopic: resetTopic, WillPayload: []byte(`{"reset":true}`)}})
	must(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0]>>4 != packets.Connack || ack[3] != 0 {
		t.Fatalf("CONNACK %x: %v", ack, err)
	}
	// The doctor may not send the thermostat's readings.
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1,
		TopicName: "things/thermo-1/data/temperature", Payload: []byte(`{"temperature":40}`)})
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("the connection did not end: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); owner.n.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n, last := owner.n.Load(), owner.last.Load(); n != 1 || last != `{"reset":true}` {
		t.Fatalf("%d message(s) at the owner's commands, the last %v; want the will", n, last)
	}
}
