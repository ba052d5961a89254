package broker_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/broker"
)

// testClock is the broker's clock in the end-to-end tests: 20:00 UTC on the
// evening of Ruth's visit (her window is 18:00–23:00).
type testClock struct{ ns atomic.Int64 }

func (c *testClock) Now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

var (
	evening = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	clock   = &testClock{}
	veil    *broker.Broker
)

func TestMain(m *testing.M) {
	clock.Set(evening)
	dir, err := os.MkdirTemp("", "veil-e2e-")
	if err != nil {
		panic(err)
	}
	cfg := broker.Defaults()
	cfg.MQTT, cfg.HTTP, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	cfg.Bootstrap = "testdata/e2e/household.yaml"
	cfg.LogLevel = "warn"
	cfg.MaxPacketSize = 64 << 10
	cfg.Clock = clock
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	veil, err = broker.Start(ctx, cfg, zerolog.New(os.Stderr).Level(zerolog.WarnLevel))
	cancel()
	if err != nil {
		panic(err)
	}
	code := m.Run()
	veil.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// received is one message a test client got.
type received struct {
	topic   string
	payload string
	retain  bool
}

// client is a connected MQTT v5 test client.
type client struct {
	*paho.Client
	t    testing.TB
	msgs chan received
}

type connOpts struct {
	clientID   string
	purpose    string
	will       *paho.WillMessage
	clean      bool
	expiry     uint32
	aliasMax   uint16
	manualAcks bool
}

// dial connects user (or a thing) with password and returns the client, or the CONNACK error.
func dial(t testing.TB, user, password string, o connOpts) (*client, error) {
	t.Helper()
	conn, err := net.Dial("tcp", veil.Addr("mqtt"))
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, msgs: make(chan received, 1000)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- received{topic: pr.Packet.Topic, payload: string(pr.Packet.Payload), retain: pr.Packet.Retain}
			return true, nil
		}},
		EnableManualAcknowledgment: o.manualAcks,
	})
	if o.clientID == "" {
		o.clientID = user + "-" + t.Name()
	}
	cp := &paho.Connect{ClientID: o.clientID, KeepAlive: 30, CleanStart: o.clean || o.expiry == 0,
		Username: user, UsernameFlag: user != "", Password: []byte(password), PasswordFlag: password != "",
		WillMessage: o.will, Properties: &paho.ConnectProperties{}}
	if o.expiry > 0 {
		cp.Properties.SessionExpiryInterval = &o.expiry
	}
	if o.aliasMax > 0 {
		cp.Properties.TopicAliasMaximum = &o.aliasMax
	}
	if o.purpose != "" {
		cp.Properties.User = paho.UserProperties{{Key: "purpose", Value: o.purpose}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		conn.Close()
		return nil, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, nil
}

// connect is dial that must succeed.
func connect(t testing.TB, user, password string, o connOpts) *client {
	t.Helper()
	c, err := dial(t, user, password, o)
	if err != nil {
		t.Fatalf("connect %s: %v", user, err)
	}
	return c
}

// subscribe subscribes and returns the SUBACK reason codes.
func (c *client) subscribe(purpose string, filters ...string) []byte {
	c.t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	if purpose != "" {
		s.Properties = &paho.SubscribeProperties{User: paho.UserProperties{{Key: "purpose", Value: purpose}}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, s)
	if sa != nil {
		return sa.Reasons
	}
	if err != nil {
		c.t.Fatalf("subscribe %v: %v", filters, err)
	}
	return nil
}

// mustSubscribe subscribes and fails unless every filter is granted.
func (c *client) mustSubscribe(purpose string, filters ...string) {
	c.t.Helper()
	for i, code := range c.subscribe(purpose, filters...) {
		if code > 2 {
			c.t.Fatalf("subscribe %s refused: 0x%02x", filters[i], code)
		}
	}
}

// mustSubscribeNew subscribes without being sent retained messages.
func (c *client) mustSubscribeNew(filters ...string) {
	c.t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1, RetainHandling: 2})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, s)
	if err != nil {
		c.t.Fatalf("subscribe %v: %v", filters, err)
	}
	for i, code := range sa.Reasons {
		if code > 2 {
			c.t.Fatalf("subscribe %s refused: 0x%02x", filters[i], code)
		}
	}
}

// publish sends at QoS 1 and returns the PUBACK reason code.
func (c *client) publish(topic, payload string, retain bool) byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: []byte(payload)})
	if r != nil {
		return r.ReasonCode
	}
	if err != nil {
		c.t.Fatalf("publish %s: %v", topic, err)
	}
	return 0
}

// next returns the next message, failing after a timeout.
func (c *client) next() received {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(5 * time.Second):
		c.t.Fatal("no message within 5 s")
	}
	return received{}
}

// nothing asserts no message arrives within the quiet period.
func (c *client) nothing(quiet time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		c.t.Fatalf("unexpected message on %s: %s", m.topic, m.payload)
	case <-time.After(quiet):
	}
}

// quiet is how long "nothing arrives" is watched; every test also sends a
// marker message the same subscriber is allowed to get, and sees it, so the
// quiet period is not what proves absence.
const quiet = 300 * time.Millisecond

// needMosquitto returns the path of a mosquitto client, which make test installs.
func needMosquitto(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run ./scripts/install-test-deps.sh (make test does)", name)
	}
	return p
}
