package smartlock

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/operators/agent"
)

// gateClock is a manual clock whose first Now() after arm() signals inside
// and then waits for the gate: it holds a command inside Device.Command
// (which reads the clock before it parses and applies the command) at a
// moment the test chooses.
type gateClock struct {
	*manualClock
	mu     sync.Mutex
	armed  bool
	inside chan struct{}
	gate   chan struct{}
}

func (c *gateClock) arm() {
	c.mu.Lock()
	c.armed = true
	c.mu.Unlock()
}

func (c *gateClock) Now() time.Time {
	c.mu.Lock()
	hold := c.armed
	c.armed = false
	c.mu.Unlock()
	if hold {
		close(c.inside)
		<-c.gate
	}
	return c.manualClock.Now()
}

// TestCommandBeingHandledAtStopDoesNotUnlock: an unlock the agent is
// handling when the operator is told to stop must not take effect after
// the lock-on-stop, which would leave the door unlocked with the operator
// gone. The command is held inside Device.Command, the context cancelled,
// the stop's lock awaited, then the command let go.
func TestCommandBeingHandledAtStopDoesNotUnlock(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(hooks.CloseSafely(listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr}), srv)); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close() })

	creds := filepath.Join(t.TempDir(), "lock.json")
	if err := agent.SaveCredentials(creds, agent.Credentials{Thing: "lock-1", Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	clock := &gateClock{manualClock: &manualClock{now: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)},
		inside: make(chan struct{}), gate: make(chan struct{})}
	relay := &SimRelay{}
	d := &Device{Relay: relay, Clock: clock, RelockAfter: 5 * time.Second, Log: zerolog.New(zerolog.NewTestWriter(t))}
	u, _ := url.Parse("mqtt://" + addr)
	o := agent.Options{Broker: u, CredentialsFile: creds, BackoffMin: 100 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, o, d) }()

	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	waitUntil("the lock listens for commands", func() bool {
		return d.lock.Load() != nil && len(srv.Topics.Subscribers("things/lock-1/cmd/unlock").Subscriptions) > 0
	})
	clock.arm()
	if err := srv.Publish("things/lock-1/cmd/unlock", []byte(`{"by":"ruth"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-clock.inside:
	case <-time.After(10 * time.Second):
		t.Fatal("the unlock did not reach the device")
	}
	cancel() // SIGTERM while the unlock is being handled
	waitUntil("the lock-on-stop", func() bool { return d.lock.Load().State().By == ByStop })
	close(clock.gate) // the unlock goes on
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	if st := d.lock.Load().State(); !st.Locked || st.By != ByStop || relay.Unlocked() {
		t.Fatalf("after the stop: %+v, relay unlocked=%v; want locked by %s", st, relay.Unlocked(), ByStop)
	}
}
