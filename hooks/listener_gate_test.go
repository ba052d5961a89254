package hooks

import (
	"log/slog"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// handOver is a listener that hands the connections a test gives it to the
// server's establish function, as mochi's TCP listener does from the
// goroutine it starts per accepted connection.
type handOver struct {
	establish listeners.EstablishFn
}

func (l *handOver) Init(*slog.Logger) error               { return nil }
func (l *handOver) Serve(establish listeners.EstablishFn) { l.establish = establish }
func (l *handOver) ID() string                            { return "hand-over" }
func (l *handOver) Address() string                       { return "" }
func (l *handOver) Protocol() string                      { return "tcp" }
func (l *handOver) Close(listeners.CloseFn)               {}

// A connection the listener accepted before it closed is counted in mochi's
// ClientsWg before it is established, so Server.Close's wait covers it; one
// it hands over after it closed is closed, not established. (The race the
// gate closes needs an accept in the instant the listener closes; here the
// two orders are taken one at a time.)
func TestAcceptGateCountsOrRefuses(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{})
	inner := &handOver{}
	l := CloseSafely(inner, srv)
	counted := make(chan bool, 1)
	l.Serve(func(_ string, c net.Conn) error {
		// ClientsWg counts this connection now: a Wait cannot return.
		done := make(chan struct{})
		go func() { srv.Listeners.ClientsWg.Wait(); close(done) }()
		select {
		case <-done:
			counted <- false
		case <-time.After(100 * time.Millisecond):
			counted <- true
		}
		return c.Close()
	})
	before, peer := net.Pipe()
	defer peer.Close()
	if err := inner.establish("hand-over", before); err != nil {
		t.Fatal(err)
	}
	if !<-counted {
		t.Error("a connection accepted before the close was established without being counted in ClientsWg")
	}
	srv.Listeners.ClientsWg.Wait() // and uncounted once established

	l.Close(nil)
	after, peer2 := net.Pipe()
	defer peer2.Close()
	_ = inner.establish("hand-over", after)
	select {
	case <-counted:
		t.Error("a connection handed over after the close was established")
	default:
	}
	if _, err := peer2.Write([]byte{0}); err == nil {
		t.Error("a connection handed over after the close was left open")
	}
}
