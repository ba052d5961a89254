package hooks_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// fastHash keeps tests quick; production uses argon2id's default parameters.
var fastHash = &argon2id.Params{Memory: 8 * 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// household is a small population: an owns thermo-1; a doctor sees
// temperatures rounded to 0.1; strangers see nothing.
func household(t testing.TB) (*policies.Engine, *hooks.Credentials) {
	t.Helper()
	e := policies.NewEngine(policies.Options{Secret: []byte("test")})
	for _, u := range []policies.User{{Name: "an"}, {Name: "doctor", Attributes: policies.Attributes{"role": "doctor"}}, {Name: "stranger"}} {
		if err := e.PutUser(u); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.PutThing(policies.Thing{ID: "thermo-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature"}}); err != nil {
		t.Fatal(err)
	}
	p, err := policies.ParsePolicy([]byte(`{"id":"doctor-thermo","priority":1,"effect":"allow","subjects":["role:doctor"],
		"resources":["things/thermo-1/data/temperature"],"actions":["read"],
		"constraints":[{"kind":"accuracy","field":"temperature","step":0.1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.PutPolicy("an", p); err != nil {
		t.Fatal(err)
	}
	creds := hooks.NewCredentials()
	for name, secret := range map[string]string{"user:an": "an", "user:doctor": "doctor", "user:stranger": "stranger", "thing:thermo-1": "thermo-1"} {
		h, err := argon2id.CreateHash(secret, fastHash)
		if err != nil {
			t.Fatal(err)
		}
		creds.Set(name, h)
	}
	return e, creds
}

// startServer runs mochi on a loopback port with Veil's hooks, or with
// mochi's allow-all hook when enforce is false.
func startServer(t testing.TB, enforce bool) (*mqtt.Server, string, *hooks.Enforcer) {
	t.Helper()
	var e *policies.Engine
	var creds *hooks.Credentials
	if enforce {
		e, creds = household(t)
	}
	return serve(t, e, creds)
}

// serve runs mochi on a loopback port with Veil's hooks on e, or with
// mochi's allow-all hook when e is nil; with configures the enforcer further.
func serve(t testing.TB, e *policies.Engine, creds *hooks.Credentials, with ...func(*hooks.EnforcerConfig)) (*mqtt.Server, string, *hooks.Enforcer) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var enf *hooks.Enforcer
	if e != nil {
		sessions := &hooks.Sessions{}
		log := zerolog.Nop()
		cfg := hooks.EnforcerConfig{Engine: e, Sessions: sessions, Server: srv, Log: log}
		for _, w := range with {
			w(&cfg)
		}
		enf = hooks.NewEnforcer(cfg)
		must(t, srv.AddHook(hooks.NewAuthenticator(hooks.AuthConfig{Engine: e, Credentials: creds, Sessions: sessions, Server: srv,
			MayPublish: enf.MayPublish, Log: log}), nil))
		must(t, srv.AddHook(enf, nil))
	} else {
		must(t, srv.AddHook(new(auth.AllowHook), nil))
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	must(t, srv.AddListener(hooks.CloseSafely(l, srv)))
	must(t, srv.Serve())
	t.Cleanup(func() {
		// A test that failed on a stuck broker must not hang here too.
		closed := make(chan struct{})
		go func() { _ = srv.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("mochi's Server.Close did not return within 10 s")
		}
	})
	return srv, l.Address(), enf
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// counter is a subscriber that counts what it gets and remembers the last payload.
type counter struct {
	n    atomic.Int64
	last atomic.Value
}

func dialCounting(t testing.TB, addr, clientID, user, pass string, c *counter) *paho.Client {
	t.Helper()
	return dialSession(t, addr, clientID, user, pass, 0, c)
}

// dialSession connects like dialCounting, asking for a session that
// outlives the connection by expiry seconds (0: a clean session); with
// changes the CONNECT further.
func dialSession(t testing.TB, addr, clientID, user, pass string, expiry uint32, c *counter, with ...func(*paho.Connect)) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			if c != nil {
				c.last.Store(string(pr.Packet.Payload))
				c.n.Add(1)
			}
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: clientID, Username: user, UsernameFlag: true,
		Password: []byte(pass), PasswordFlag: true, CleanStart: expiry == 0, KeepAlive: 60}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	for _, w := range with {
		w(cp)
	}
	if _, err := pc.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
	return pc
}

func subscribe(t testing.TB, pc *paho.Client, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter}}})
	if err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	if sa.Reasons[0] > 2 {
		t.Fatalf("subscribe %s refused: %x", filter, sa.Reasons[0])
	}
}

// fanout connects 100 subscribers in three views (a third the owner, raw; a
// third the doctor, rounded; a third strangers on a wildcard, denied) and a publisher.
type fanout struct {
	enforcer           *hooks.Enforcer
	pub                *paho.Client
	raw, rounded, none []*counter
}

func newFanout(t testing.TB, enforce bool, with ...func(*hooks.EnforcerConfig)) *fanout {
	var e *policies.Engine
	var creds *hooks.Credentials
	if enforce {
		e, creds = household(t)
	}
	_, addr, enf := serve(t, e, creds, with...)
	f := &fanout{enforcer: enf}
	for i := range 100 {
		c := &counter{}
		switch i % 3 {
		case 0:
			subscribe(t, dialCounting(t, addr, fmt.Sprintf("an-%d", i), "an", "an", c), "things/thermo-1/data/temperature")
			f.raw = append(f.raw, c)
		case 1:
			subscribe(t, dialCounting(t, addr, fmt.Sprintf("doctor-%d", i), "doctor", "doctor", c), "things/thermo-1/data/temperature")
			f.rounded = append(f.rounded, c)
		default:
			subscribe(t, dialCounting(t, addr, fmt.Sprintf("stranger-%d", i), "stranger", "stranger", c), "things/+/data/#")
			f.none = append(f.none, c)
		}
	}
	f.pub = dialCounting(t, addr, "thermo-1", "thermo-1", "thermo-1", nil)
	return f
}

// waitAll waits until every counter in cs has at least n messages.
func waitAll(t testing.TB, n int64, cs ...[]*counter) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, group := range cs {
		for _, c := range group {
			for c.n.Load() < n {
				if time.Now().After(deadline) {
					t.Fatalf("subscriber stuck at %d of %d messages", c.n.Load(), n)
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
	}
}
