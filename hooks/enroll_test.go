package hooks_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/hooks"
)

// TestFactoryLogin: a device enrolling connects as factory:{serial} with
// client id enroll-{serial} and its factory secret, and nothing else gets in;
// guessing one serial's secret is cut off per serial.
func TestFactoryLogin(t *testing.T) {
	e, creds := household(t)
	h, err := argon2id.CreateHash("factory-1", fastHash)
	must(t, err)
	creds.Set(hooks.FactoryUserPrefix+"JL-1", h)
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	must(t, srv.AddHook(hooks.NewAuthenticator(hooks.AuthConfig{Engine: e, Credentials: creds, Sessions: &hooks.Sessions{}, Server: srv,
		Log: zerolog.Nop(), Limiter: hooks.NewFailureLimiter(1000, time.Minute, nil),
		SerialLimiter: hooks.NewFailureLimiter(3, time.Minute, nil)}), nil))
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	must(t, srv.AddListener(hooks.CloseSafely(l, srv)))
	must(t, srv.Serve())
	t.Cleanup(func() { _ = srv.Close() })

	tests := []struct {
		name, clientID, user, pass string
		ok                         bool
	}{
		{"right secret", "enroll-JL-1", "factory:JL-1", "factory-1", true},
		{"other client id", "JL-1", "factory:JL-1", "factory-1", false},
		{"another serial's client id", "enroll-JL-2", "factory:JL-1", "factory-1", false},
		{"unknown serial", "enroll-XX", "factory:XX", "factory-1", false},
		{"empty serial", "enroll-", "factory:", "factory-1", false},
		{"wrong secret 1", "enroll-JL-1", "factory:JL-1", "guess", false},
		{"wrong secret 2", "enroll-JL-1", "factory:JL-1", "guess", false},
		{"wrong secret 3", "enroll-JL-1", "factory:JL-1", "guess", false},
		{"right secret, serial blocked", "enroll-JL-1", "factory:JL-1", "factory-1", false},
	}
	for i, tc := range tests {
		conn, err := net.Dial("tcp", l.Address())
		must(t, err)
		pc := paho.NewClient(paho.ClientConfig{Conn: conn})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = pc.Connect(ctx, &paho.Connect{ClientID: tc.clientID, Username: tc.user, UsernameFlag: true,
			Password: []byte(tc.pass), PasswordFlag: true, CleanStart: true})
		cancel()
		if (err == nil) != tc.ok {
			t.Fatalf("%d %s: connect err = %v, want ok=%v", i, tc.name, err, tc.ok)
		}
		if err == nil {
			_ = pc.Disconnect(&paho.Disconnect{})
		}
	}
}
