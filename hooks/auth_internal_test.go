package hooks

import (
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/policies"
)

// TestAbsentPrincipalCostsAnArgon2idCheck: the secret of a principal that
// does not exist (a user, a thing, a serial) is checked against a decoy,
// in an argon2id slot like any other: refused at once, the time of a
// refusal told who exists. With every slot taken, such a check waits for
// one like a real check does (and gives up busy).
func TestAbsentPrincipalCostsAnArgon2idCheck(t *testing.T) {
	c := NewCredentials()
	h, err := argon2id.CreateHash("an-secret", &argon2id.Params{Memory: 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32})
	if err != nil {
		t.Fatal(err)
	}
	c.Set("user:an", h)
	for range cap(c.hashing) {
		c.takeSlot(0)
	}
	for _, who := range []string{"user:an", "user:nobody", FactoryUserPrefix + "NO-SUCH-SERIAL"} {
		if ok, busy := c.Check(who, []byte("a-guess"), 20*time.Millisecond); ok || !busy {
			t.Errorf("Check(%s) with every slot taken = ok %v, busy %v; want a wait for a slot, as for a user who exists", who, ok, busy)
		}
	}
	for range cap(c.hashing) {
		<-c.hashing
	}
	if ok, busy := c.Check("user:nobody", []byte("an-secret"), 0); ok || busy {
		t.Errorf("a principal that does not exist: ok %v, busy %v", ok, busy)
	}
}

// TestFactoryLoginsOfSerialsNobodyHas: a serial longer than any (a
// username may be 64 KiB) is refused as such, and failures of serials
// that do not exist are not kept per serial: made-up serials filled the
// limiter with 64 KiB keys nobody looks up again.
func TestFactoryLoginsOfSerialsNobodyHas(t *testing.T) {
	creds := NewCredentials()
	h, err := argon2id.CreateHash("factory-secret", &argon2id.Params{Memory: 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32})
	if err != nil {
		t.Fatal(err)
	}
	creds.Set(FactoryUserPrefix+"JL-200-0001", h)
	srv := mqtt.New(nil)
	a := NewAuthenticator(AuthConfig{Engine: policies.NewEngine(policies.Options{Secret: []byte("t")}), Credentials: creds,
		Sessions: &Sessions{}, Server: srv, Log: zerolog.Nop()})
	login := func(serial string) string {
		cl := srv.NewClient(nil, "t", EnrollClientPrefix+serial, false)
		pk := packets.Packet{Connect: packets.ConnectParams{Username: []byte(FactoryUserPrefix + serial), Password: []byte("a-guess")}}
		_, _, reason := a.authenticate(cl, pk, "192.0.2.1")
		return reason
	}
	if got := login(strings.Repeat("S", 64<<10)); got != "bad-serial" {
		t.Errorf("a 64 KiB serial: %q, want bad-serial", got)
	}
	for _, serial := range []string{"NO-SUCH-1", "NO-SUCH-2", "JL-200-0001"} {
		if got := login(serial); got != "bad-factory-secret" {
			t.Errorf("%s: %q", serial, got)
		}
	}
	if n := len(a.serials.fails); n != 1 {
		t.Errorf("the serial limiter keeps %d serials, want only the one that exists", n)
	}
}
