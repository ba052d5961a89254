package hooks_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/golang-jwt/jwt/v5"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/hooks"
)

type stepClock struct{ ns atomic.Int64 }

func (c *stepClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *stepClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func TestFailureLimiter(t *testing.T) {
	clock := &stepClock{}
	clock.ns.Store(time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC).UnixNano())
	l := hooks.NewFailureLimiter(3, time.Minute, clock)
	for i := range 3 {
		if l.Blocked("10.0.0.1") {
			t.Fatalf("blocked after %d failures", i)
		}
		l.Fail("10.0.0.1")
	}
	if !l.Blocked("10.0.0.1") {
		t.Fatal("not blocked after 3 failures")
	}
	if l.Blocked("10.0.0.2") {
		t.Fatal("another address is blocked")
	}
	clock.Add(time.Minute + time.Second)
	if l.Blocked("10.0.0.1") {
		t.Fatal("still blocked after the window")
	}
}

func TestCredentialsVerify(t *testing.T) {
	_, creds := household(t)
	tests := []struct {
		principal, secret string
		want              bool
	}{
		{"user:an", "an", true},
		{"user:an", "an", true}, // second time from the verified cache
		{"user:an", "AN", false},
		{"user:an", "", false},
		{"user:nobody", "an", false},
		{"thing:thermo-1", "thermo-1", true},
		{"thing:thermo-1", "an", false},
	}
	for _, tc := range tests {
		if got := creds.Verify(tc.principal, []byte(tc.secret)); got != tc.want {
			t.Fatalf("Verify(%s, %q) = %v", tc.principal, tc.secret, got)
		}
	}
	// A changed hash invalidates the remembered verification.
	creds.Set("user:an", "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g")
	if creds.Verify("user:an", []byte("an")) {
		t.Fatal("old password accepted after the hash changed")
	}
}

func TestJWTBearerTokens(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e, creds := household(t)
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	sessions := &hooks.Sessions{}
	must(t, srv.AddHook(hooks.NewAuthenticator(hooks.AuthConfig{Engine: e, Credentials: creds, Sessions: sessions, Server: srv,
		JWT: &hooks.JWTConfig{Issuer: "https://id.example", Audience: "mqtt://veil.example", Key: pub}, Log: zerolog.Nop(),
		Limiter: hooks.NewFailureLimiter(1000, time.Minute, nil)}), nil))
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	must(t, srv.AddListener(hooks.CloseSafely(l, srv)))
	must(t, srv.Serve())
	t.Cleanup(func() { _ = srv.Close() })

	sign := func(claims jwt.RegisteredClaims, key any, method jwt.SigningMethod) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := jwt.RegisteredClaims{Issuer: "https://id.example", Subject: "doctor", Audience: jwt.ClaimStrings{"mqtt://veil.example"},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}
	with := func(change func(*jwt.RegisteredClaims)) jwt.RegisteredClaims {
		c := valid
		change(&c)
		return c
	}
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name  string
		user  string
		token string
		ok    bool
	}{
		{"valid", "doctor", sign(valid, priv, jwt.SigningMethodEdDSA), true},
		{"other subject", "an", sign(valid, priv, jwt.SigningMethodEdDSA), false},
		{"wrong issuer", "doctor", sign(with(func(c *jwt.RegisteredClaims) { c.Issuer = "evil" }), priv, jwt.SigningMethodEdDSA), false},
		{"expired", "doctor", sign(with(func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) }), priv, jwt.SigningMethodEdDSA), false},
		{"no expiry", "doctor", sign(with(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil }), priv, jwt.SigningMethodEdDSA), false},
		{"other key", "doctor", sign(valid, otherPriv, jwt.SigningMethodEdDSA), false},
		{"hmac with the public key (alg confusion)", "doctor", sign(valid, []byte(pub), jwt.SigningMethodHS256), false},
		{"audience among others", "doctor", sign(with(func(c *jwt.RegisteredClaims) {
			c.Audience = jwt.ClaimStrings{"https://photos.example", "mqtt://veil.example"}
		}), priv, jwt.SigningMethodEdDSA), true},
		// A token the issuer minted for another application (RFC 8725 §3.9).
		{"another audience", "doctor", sign(with(func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"https://photos.example"} }), priv, jwt.SigningMethodEdDSA), false},
		{"no audience", "doctor", sign(with(func(c *jwt.RegisteredClaims) { c.Audience = nil }), priv, jwt.SigningMethodEdDSA), false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", l.Address())
			must(t, err)
			pc := paho.NewClient(paho.ClientConfig{Conn: conn})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = pc.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("jwt-%d", i), Username: tc.user, UsernameFlag: true,
				Password: []byte(tc.token), PasswordFlag: true, CleanStart: true})
			if (err == nil) != tc.ok {
				t.Fatalf("connect err = %v, want ok=%v", err, tc.ok)
			}
			if err == nil {
				_ = pc.Disconnect(&paho.Disconnect{})
			}
		})
	}
}

// connectFrom connects from the loopback address local (all of
// 127.0.0.0/8 reaches the broker on Linux), as an attacker with many
// addresses would (an IPv6 /64, a botnet).
func connectFrom(t *testing.T, addr, local, clientID, user, pass string) error {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := d.Dial("tcp", addr)
	must(t, err)
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pc.Connect(ctx, &paho.Connect{ClientID: clientID, Username: user, UsernameFlag: true,
		Password: []byte(pass), PasswordFlag: true, CleanStart: true})
	if err == nil {
		_ = pc.Disconnect(&paho.Disconnect{})
	}
	return err
}

// TestPasswordGuessingIsLimitedPerUser: guesses at a user's password from
// many addresses, each within its own limit, stop being checked after the
// user's 20th failure: the right password from a new address is refused
// then. The user still logs in from an address she logged in from before.
func TestPasswordGuessingIsLimitedPerUser(t *testing.T) {
	_, addr, _ := startServer(t, true)
	if err := connectFrom(t, addr, "127.0.0.1", "an-phone", "an", "an"); err != nil {
		t.Fatalf("an's first login: %v", err)
	}
	for i := range 25 {
		if err := connectFrom(t, addr, fmt.Sprintf("127.0.1.%d", i+1), fmt.Sprintf("g%d", i), "an", fmt.Sprintf("guess-%d", i)); err == nil {
			t.Fatalf("wrong guess %d accepted", i)
		}
	}
	if err := connectFrom(t, addr, "127.0.2.1", "g-right", "an", "an"); err == nil {
		t.Error("after 25 wrong passwords for an from 25 addresses, the right one from a 26th was still checked (and let in)")
	}
	if err := connectFrom(t, addr, "127.0.0.1", "an-phone", "an", "an"); err != nil {
		t.Errorf("an, from the address she logged in from before, is locked out by the guesses: %v", err)
	}
}
