package hooks_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/hooks"
)

// TestCloseSafelyDisconnectsItsOwnClients: closing a wrapped listener never
// calls mochi's CloseFn (Clients.GetByListener, which deadlocks when a
// client connects or disconnects between its two read locks:
// mochi-mqtt/server#488), and disconnects that listener's clients, not
// another's.
func TestCloseSafelyDisconnectsItsOwnClients(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	must(t, srv.AddHook(new(auth.AllowHook), nil))
	addr := map[string]string{}
	for _, id := range []string{"one", "two"} {
		l := listeners.NewTCP(listeners.Config{ID: id, Address: "127.0.0.1:0"})
		must(t, srv.AddListener(hooks.CloseSafely(l, srv)))
		addr[id] = l.Address()
	}
	must(t, srv.Serve())
	t.Cleanup(func() { _ = srv.Close() })
	for _, id := range []string{"one", "two"} {
		for i := range 3 {
			c := connectRaw(addr[id], fmt.Sprintf("%s-%d", id, i))
			if c == nil {
				t.Fatalf("client %s-%d could not connect", id, i)
			}
			defer c.Close()
		}
	}
	called := false
	srv.Listeners.Close("one", func(string) { called = true })
	if called {
		t.Error("closing the listener called mochi's CloseFn")
	}
	open := func(id string) (n int) {
		for _, cl := range srv.Clients.GetAll() {
			if cl.Net.Listener == id && !cl.Closed() {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for open("one") > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n1, n2 := open("one"), open("two"); n1 != 0 || n2 != 3 {
		t.Errorf("open clients after closing listener one: one %d, two %d; want 0 and 3", n1, n2)
	}
}

// TestCloseWhileClientsComeAndGo stops a broker with two listeners while
// clients connect and disconnect on both, and wants Server.Close to return
// every time. (With mochi's own listener Close the deadlock needs a writer
// to arrive within nanoseconds; it hung the hooks benchmark once, not this
// test: VEIL_TEST_MOCHI_CLOSE=1 runs it that way.)
func TestCloseWhileClientsComeAndGo(t *testing.T) {
	wrap := hooks.CloseSafely
	if os.Getenv("VEIL_TEST_MOCHI_CLOSE") == "1" {
		wrap = func(l listeners.Listener, _ *mqtt.Server) listeners.Listener { return l }
	}
	for round := range 5 {
		srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		must(t, srv.AddHook(new(auth.AllowHook), nil))
		var addrs []string
		for _, id := range []string{"one", "two"} {
			l := listeners.NewTCP(listeners.Config{ID: id, Address: "127.0.0.1:0"})
			must(t, srv.AddListener(wrap(l, srv)))
			addrs = append(addrs, l.Address())
		}
		must(t, srv.Serve())
		for i := range 20 {
			for _, a := range addrs {
				if c := connectRaw(a, fmt.Sprintf("idle-%s-%d", a, i)); c != nil {
					defer c.Close()
				}
			}
		}
		stop := make(chan struct{})
		var churn sync.WaitGroup
		stopChurn := sync.OnceFunc(func() { close(stop); churn.Wait() })
		t.Cleanup(stopChurn) // also after a Fatalf
		for w := range 4 {
			churn.Add(1)
			go func() {
				defer churn.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if c := connectRaw(addrs[w%2], fmt.Sprintf("churn-%d-%d", w, i)); c != nil {
						_ = c.Close()
					}
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		closed := make(chan struct{})
		go func() { _ = srv.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Server.Close has not returned after 10 s", round)
		}
		stopChurn()
	}
}

// connectRaw opens an MQTT 3.1.1 connection and waits for the CONNACK; nil
// if the broker is not there (any more).
func connectRaw(addr, id string) net.Conn {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id}}
	var b bytes.Buffer
	if pk.ConnectEncode(&b) != nil {
		_ = c.Close()
		return nil
	}
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(b.Bytes()); err != nil {
		_ = c.Close()
		return nil
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0]>>4 != packets.Connack {
		_ = c.Close()
		return nil
	}
	_ = c.SetDeadline(time.Time{})
	return c
}
