package hooks

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
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

// TestFactoryLoginOfAnOverLongSerial: a serial longer than any (a
// username may be 64 KiB) is refused as such, before it is counted: the
// serial limiter, which counts serials nobody has too (or a blocked serial
// would tell that it exists), keeps keys of at most maxSerial bytes.
func TestFactoryLoginOfAnOverLongSerial(t *testing.T) {
	r := newLoginRig(t)
	serial := strings.Repeat("S", 64<<10)
	if got := r.login(EnrollClientPrefix+serial, FactoryUserPrefix+serial, "a-guess", "192.0.2.1"); got != "bad-serial" {
		t.Errorf("a 64 KiB serial: %q, want bad-serial", got)
	}
	if got := r.login(EnrollClientPrefix+"NO-SUCH-1", FactoryUserPrefix+"NO-SUCH-1", "a-guess", "192.0.2.1"); got != "bad-factory-secret" {
		t.Errorf("a serial nobody has: %q", got)
	}
	for k := range r.a.serials.fails {
		if len(k) > maxSerial {
			t.Errorf("the serial limiter keeps a key of %d bytes", len(k))
		}
	}
}

var lightHash = &argon2id.Params{Memory: 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// loginRig is an authenticator over user an (password "an-pass"), thing
// cam-1 and factory serial JL-1.
type loginRig struct {
	a     *Authenticator
	srv   *mqtt.Server
	creds *Credentials
}

func newLoginRig(t *testing.T) *loginRig {
	t.Helper()
	e := policies.NewEngine(policies.Options{Secret: []byte("t")})
	if err := e.PutUser(policies.User{Name: "an"}); err != nil {
		t.Fatal(err)
	}
	if err := e.PutThing(policies.Thing{ID: "cam-1", Owner: "an", Kind: "camera"}); err != nil {
		t.Fatal(err)
	}
	creds := NewCredentials()
	for p, secret := range map[string]string{"user:an": "an-pass", "thing:cam-1": "cam-secret", FactoryUserPrefix + "JL-1": "factory"} {
		h, err := argon2id.CreateHash(secret, lightHash)
		if err != nil {
			t.Fatal(err)
		}
		creds.Set(p, h)
	}
	srv := mqtt.New(nil)
	return &loginRig{a: NewAuthenticator(AuthConfig{Engine: e, Credentials: creds, Sessions: &Sessions{}, Server: srv, Log: zerolog.Nop()}),
		srv: srv, creds: creds}
}

// login returns the reason authenticate refuses (or "").
func (r *loginRig) login(clientID, user, pass, addr string) string {
	cl := r.srv.NewClient(nil, "t", clientID, false)
	pk := packets.Packet{Connect: packets.ConnectParams{Username: []byte(user), Password: []byte(pass)}}
	_, _, reason := r.a.authenticate(cl, pk, addr)
	return reason
}

// atOnce runs n logins at once, all in flight together: they wait for
// argon2id slots held until all have started.
func (r *loginRig) atOnce(n int, login func(i int) string) []string {
	release := holdSlots(r.creds)
	results := make([]string, n)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = login(i)
		}()
	}
	time.Sleep(200 * time.Millisecond)
	release()
	wg.Wait()
	return results
}

// checks reports whether login runs an argon2id check: with every slot
// taken, one that does waits for a slot; one that does not returns at once.
func (r *loginRig) checks(login func() string) bool {
	for range cap(r.creds.hashing) {
		r.creds.takeSlot(0)
	}
	done := make(chan string, 1)
	go func() { done <- login() }()
	checked := false
	select {
	case <-done:
	case <-time.After(300 * time.Millisecond):
		checked = true
	}
	for range cap(r.creds.hashing) {
		<-r.creds.hashing
	}
	if checked {
		<-done
	}
	return checked
}

// TestRefusalsSayNothingOfWhoExists: whether a user, a thing or a serial
// exists shows neither in the answer nor in its time — past its failures
// (names and serials nobody has are counted too), and for a thing's name
// with another client id.
func TestRefusalsSayNothingOfWhoExists(t *testing.T) {
	for _, c := range []struct {
		name           string
		exists, absent func(r *loginRig) string
		guesses        func(r *loginRig, i int)
	}{
		{"user past its failures",
			func(r *loginRig) string { return r.login("x", "an", "guess", "198.51.100.7") },
			func(r *loginRig) string { return r.login("y", "nobody", "guess", "198.51.100.7") },
			func(r *loginRig, i int) {
				r.login(fmt.Sprintf("g%d", i), "an", "guess", fmt.Sprintf("192.0.2.%d", i+1))
				r.login(fmt.Sprintf("h%d", i), "nobody", "guess", fmt.Sprintf("192.0.2.%d", i+1))
			}},
		{"serial past its failures",
			func(r *loginRig) string {
				return r.login(EnrollClientPrefix+"JL-1", FactoryUserPrefix+"JL-1", "guess", "198.51.100.7")
			},
			func(r *loginRig) string {
				return r.login(EnrollClientPrefix+"JL-999", FactoryUserPrefix+"JL-999", "guess", "198.51.100.7")
			},
			func(r *loginRig, i int) {
				for _, s := range []string{"JL-1", "JL-999"} {
					r.login(EnrollClientPrefix+s, FactoryUserPrefix+s, "guess", fmt.Sprintf("192.0.2.%d", i+1))
				}
			}},
		{"a thing's name with another client id",
			func(r *loginRig) string { return r.login("probe", "cam-1", "guess", "192.0.2.1") },
			func(r *loginRig) string { return r.login("probe", "cam-9", "guess", "192.0.2.1") },
			nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newLoginRig(t)
			for i := range 20 {
				if c.guesses != nil {
					c.guesses(r, i)
				}
			}
			exists := r.checks(func() string { return c.exists(r) })
			absent := r.checks(func() string { return c.absent(r) })
			if exists != absent {
				t.Errorf("one that exists checked=%v, one that does not checked=%v: the time of the refusal tells which exists", exists, absent)
			}
		})
	}
}

// TestDecoyMadeLikeItsKind: the decoy of an unknown user is made like the
// users' hashes, not like whichever hash was stored last (a device's
// secret, issued with other parameters).
func TestDecoyMadeLikeItsKind(t *testing.T) {
	creds := NewCredentials()
	heavy := &argon2id.Params{Memory: 4 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}
	h, err := argon2id.CreateHash("an-pass", heavy)
	if err != nil {
		t.Fatal(err)
	}
	creds.Set("user:an", h)
	if h, err = argon2id.CreateHash("device-secret", lightHash); err != nil {
		t.Fatal(err)
	}
	creds.Set("thing:cam-2", h) // stored after
	creds.Check("user:nobody", []byte("guess"), 0)
	creds.Check("thing:nothing", []byte("guess"), 0)
	for _, want := range []string{"m=4096,t=2,p=1", "m=1024,t=1,p=1"} {
		found := false
		for kind := range creds.decoys {
			found = found || strings.HasPrefix(kind, want)
		}
		if !found {
			t.Errorf("no decoy %s among %v", want, creds.decoys)
		}
	}
}

// TestGuessingStopsTheGuesserNotTheOwner: past a name's 20 failures (from
// 20 addresses), its secret is checked only from the networks it logged in
// from lately — a user's IPv6 /64, whatever privacy address she has today
// — and a thing's secret is limited as a user's password is.
func TestGuessingStopsTheGuesserNotTheOwner(t *testing.T) {
	r := newLoginRig(t)
	if got := r.login("an-phone", "an", "an-pass", "2001:db8:1:2:a1b2:c3d4:e5f6:1"); got != "" {
		t.Fatalf("an's first login: %s", got)
	}
	if got := r.login("cam-1", "cam-1", "cam-secret", "192.0.2.200"); got != "" {
		t.Fatalf("cam-1's first login: %s", got)
	}
	for i := range 25 {
		r.login(fmt.Sprintf("g%d", i), "an", "guess", fmt.Sprintf("203.0.113.%d", i+1))
		r.login("cam-1", "cam-1", "guess", fmt.Sprintf("203.0.113.%d", i+1))
	}
	for _, c := range []struct {
		who, clientID, user, pass, addr, want string
	}{
		{"an from her /64, tomorrow's privacy address", "an-phone", "an", "an-pass", "2001:db8:1:2:9f8e:7d6c:5b4a:2", ""},
		{"the right password from elsewhere", "x", "an", "an-pass", "198.51.100.9", reasonNameLimited},
		{"cam-1 from its network", "cam-1", "cam-1", "cam-secret", "192.0.2.201", ""},
		{"cam-1's secret from elsewhere", "cam-1", "cam-1", "cam-secret", "198.51.100.9", reasonNameLimited},
	} {
		if got := r.login(c.clientID, c.user, c.pass, c.addr); got != c.want {
			t.Errorf("%s: %q, want %q", c.who, got, c.want)
		}
	}
}

// holdSlots takes every argon2id slot of creds and returns the function
// giving them back.
func holdSlots(creds *Credentials) (release func()) {
	for range cap(creds.hashing) {
		creds.takeSlot(0)
	}
	return func() {
		for range cap(creds.hashing) {
			<-creds.hashing
		}
	}
}

// connectFrom runs OnConnectAuthenticate (the address limiter included)
// for one CONNECT from addr.
func (r *loginRig) connectFrom(clientID, user, pass, addr string) bool {
	cl := r.srv.NewClient(nil, "t", clientID, false)
	cl.Net.Remote = net.JoinHostPort(addr, "40000")
	pk := packets.Packet{Connect: packets.ConnectParams{Username: []byte(user), Password: []byte(pass)}}
	return r.a.OnConnectAuthenticate(cl, pk)
}

// TestGuessesSentAtOnceAreCounted: an attempt is counted before it is
// checked, not after: guesses sent at once, all waiting for an argon2id
// slot, once all passed the limiters (a failure was recorded only after
// its check), and the last of a burst, the right secret, got in.
func TestGuessesSentAtOnceAreCounted(t *testing.T) {
	burst := func(t *testing.T, r *loginRig, n int, login func(i int) string) []string {
		release := holdSlots(r.creds)
		var wg sync.WaitGroup
		results := make([]string, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = login(i)
			}()
			time.Sleep(2 * time.Millisecond) // in order: the right one last
		}
		time.Sleep(100 * time.Millisecond)
		release()
		wg.Wait()
		return results
	}
	count := func(results []string, not string) (n int) {
		for _, r := range results {
			if r != not {
				n++
			}
		}
		return n
	}
	t.Run("per name, 60 guesses from 60 addresses", func(t *testing.T) {
		r := newLoginRig(t)
		res := burst(t, r, 60, func(i int) string {
			pass := map[bool]string{true: "an-pass", false: "guess"}[i == 59]
			return r.login(fmt.Sprintf("g%d", i), "an", pass, fmt.Sprintf("203.0.%d.1", i))
		})
		if n := count(res, reasonNameLimited); n > 20 || res[59] == "" {
			t.Errorf("%d of 60 guesses of an's password checked (limit 20); the last, right, got %q", n, res[59])
		}
	})
	t.Run("per serial, 20 guesses", func(t *testing.T) {
		r := newLoginRig(t)
		res := burst(t, r, 20, func(i int) string {
			pass := map[bool]string{true: "factory", false: "guess"}[i == 19]
			return r.login(EnrollClientPrefix+"JL-1", FactoryUserPrefix+"JL-1", pass, fmt.Sprintf("203.0.%d.1", i))
		})
		if n := count(res, "rate-limited"); n > 5 || res[19] == "" {
			t.Errorf("%d of 20 guesses of JL-1's factory secret checked (limit 5); the last, right, got %q", n, res[19])
		}
	})
	t.Run("per address, 80 guesses", func(t *testing.T) {
		r := newLoginRig(t)
		var checking atomic.Int32
		release := holdSlots(r.creds)
		var wg sync.WaitGroup
		for i := range 80 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				checking.Add(1)
				r.connectFrom(fmt.Sprintf("c%d", i), fmt.Sprintf("user%d", i), "guess", "198.51.100.7")
				checking.Add(-1)
			}()
		}
		time.Sleep(200 * time.Millisecond)
		waiting := checking.Load()
		release()
		wg.Wait()
		if waiting > 64 {
			t.Errorf("%d CONNECTs from one address wait for argon2id at once (limit 64)", waiting)
		}
	})
}

// TestRefusalOfAJWTShapedPasswordSaysNothing: with bearer tokens on, a
// password shaped like a JWT is verified as one, without argon2id, for a
// name nobody has as for a user.
func TestRefusalOfAJWTShapedPasswordSaysNothing(t *testing.T) {
	r := newLoginRig(t)
	r.a.jwt = &JWTConfig{Issuer: "iss", Audience: "veil", Key: []byte("hmac-key")}
	const token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	exists := r.checks(func() string { return r.login("x1", "an", token, "192.0.2.1") })
	absent := r.checks(func() string { return r.login("x2", "nobody", token, "192.0.2.2") })
	if exists != absent {
		t.Errorf("a JWT-shaped password: for an checked with argon2id %v, for nobody %v", exists, absent)
	}
}

// TestGuessingFromTheOwnersNetworkIsLimited: from a network the user
// logged in from lately, guesses are limited apart (her IPv6 /64 has 2^64
// addresses, each once a fresh key): 200 guesses from it, 20 checked.
func TestGuessingFromTheOwnersNetworkIsLimited(t *testing.T) {
	r := newLoginRig(t)
	if got := r.login("an-phone", "an", "an-pass", "2001:db8:1:2::1"); got != "" {
		t.Fatal(got)
	}
	checked := 0
	for i := range 200 {
		if r.login(fmt.Sprintf("g%d", i), "an", "guess", fmt.Sprintf("2001:db8:1:2:ffff::%x", i+1)) == "bad-password" {
			checked++
		}
	}
	if checked > 20 {
		t.Errorf("%d guesses of an's password from her /64 checked in one window (limit 20)", checked)
	}
	if got := addressKey("2001:db8:1:2:ffff::7"); got != "2001:db8:1:2::/64" {
		t.Errorf("an IPv6 address is limited as %q, want its /64", got)
	}
}

// TestSecretReplacedDuringItsCheck: a login with a secret that is
// replaced while it waits for its check (a device enrolled again) is
// refused: the secret it matched is void.
func TestSecretReplacedDuringItsCheck(t *testing.T) {
	c := NewCredentials()
	oldHash, _ := argon2id.CreateHash("old-secret", lightHash)
	newHash, _ := argon2id.CreateHash("new-secret", lightHash)
	c.Set("thing:jl-1", oldHash)
	release := holdSlots(c)
	done := make(chan bool, 1)
	go func() {
		ok, _ := c.Check("thing:jl-1", []byte("old-secret"), loginSlotWait)
		done <- ok
	}()
	time.Sleep(50 * time.Millisecond)
	c.Set("thing:jl-1", newHash)
	release()
	if <-done {
		t.Error("the old secret, checked after it was replaced, logged in")
	}
	if ok, _ := c.Check("thing:jl-1", []byte("new-secret"), 0); !ok {
		t.Error("the new secret does not log in")
	}
}

// TestOddStoredHashes: a stored hash argon2id decodes but argon2 cannot
// run (zero iterations, threads or key: a store written by hand) refuses
// its own principal's login and makes no decoy of its kind panic the
// broker, and no argon2id slot is lost.
func TestOddStoredHashes(t *testing.T) {
	for _, odd := range []string{
		"$argon2id$v=19$m=1024,t=0,p=1$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U",
		"$argon2id$v=19$m=1024,t=1,p=0$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U",
		"$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$",
	} {
		c := NewCredentials()
		c.Set("user:legacy", odd)
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%q stored: panic %v", odd, r)
				}
			}()
			if ok, _ := c.Check("user:legacy", []byte("guess"), time.Second); ok {
				t.Errorf("%q stored: a guess logged in", odd)
			}
			c.Check("user:nobody", []byte("guess"), time.Second)
		}()
		if free := cap(c.hashing) - len(c.hashing); free != cap(c.hashing) {
			t.Errorf("%q stored: %d of %d argon2id slots free", odd, free, cap(c.hashing))
		}
	}
}

// TestJWTShapedPasswordForAThingSaysNothing: a JWT-shaped password for a
// thing's name, or with a thing's client id, is refused as for a name
// nobody has: the time told which thing ids exist.
func TestJWTShapedPasswordForAThingSaysNothing(t *testing.T) {
	r := newLoginRig(t)
	r.a.jwt = &JWTConfig{Issuer: "iss", Audience: "veil", Key: []byte("hmac-key")}
	const token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	thing := r.checks(func() string { return r.login("cam-1", "cam-1", token, "192.0.2.1") })
	absent := r.checks(func() string { return r.login("cam-9", "cam-9", token, "192.0.2.2") })
	thingID := r.checks(func() string { return r.login("cam-1", "zed", token, "192.0.2.3") })
	noID := r.checks(func() string { return r.login("cam-9", "zed", token, "192.0.2.4") })
	if thing != absent || thingID != noID {
		t.Errorf("a JWT-shaped password: thing cam-1 checked %v, nobody %v; client id of a thing %v, of none %v", thing, absent, thingID, noID)
	}
}

// TestHouseholdLogsInAllAtOnce: many devices behind one address log in
// at once after a restart (every login waits for argon2id): none is
// refused for the others in flight.
func TestHouseholdLogsInAllAtOnce(t *testing.T) {
	r := newLoginRig(t)
	h, err := argon2id.CreateHash("dev-secret", lightHash)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if err := r.a.engine.PutThing(policies.Thing{ID: fmt.Sprintf("dev-%d", i), Owner: "an", Kind: "sensor"}); err != nil {
			t.Fatal(err)
		}
		r.creds.Set(fmt.Sprintf("thing:dev-%d", i), h)
	}
	release := holdSlots(r.creds)
	var wg sync.WaitGroup
	var refused atomic.Int32
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if id := fmt.Sprintf("dev-%d", i); !r.connectFrom(id, id, "dev-secret", "198.51.100.7") {
				refused.Add(1)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	release()
	wg.Wait()
	if n := refused.Load(); n > 0 {
		t.Errorf("%d of 30 right logins from one household address refused", n)
	}
}

// TestAddressGuessesPerMinute: an address gets 10 failed checks a minute
// however they are sent: a burst of 64 (the logins it may have in flight)
// fills its bucket, which takes over five minutes to drain. It once got
// all 64 checked every minute.
func TestAddressGuessesPerMinute(t *testing.T) {
	r := newLoginRig(t)
	clock := &settableClock{}
	clock.Set(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r.a.limiter.clock, r.a.names.clock = clock, clock
	checked := 0
	for minute := range 5 {
		before := len(r.a.names.fails) // every checked guess is a failure of its own name
		r.atOnce(64, func(i int) string {
			r.connectFrom(fmt.Sprintf("c%d-%d", minute, i), fmt.Sprintf("u%d-%d", minute, i), "guess", "198.51.100.7")
			return ""
		})
		checked += len(r.a.names.fails) - before
		clock.Add(61 * time.Second)
	}
	if limit := 5*10 + 54; checked > limit {
		t.Errorf("%d wrong passwords from one address checked in five minutes (10 failures a minute and one burst: %d)", checked, limit)
	}
}

// TestEmptyPasswordSaysNothingOfThings: a CONNECT with no password is
// refused at once whatever its names are (an empty secret is never
// checked): a thing's client id or name once cost a decoy check.
func TestEmptyPasswordSaysNothingOfThings(t *testing.T) {
	r := newLoginRig(t)
	thingID := r.checks(func() string { return r.login("cam-1", "zed", "", "192.0.2.1") })
	noID := r.checks(func() string { return r.login("cam-9", "zed", "", "192.0.2.2") })
	thingName := r.checks(func() string { return r.login("probe", "cam-1", "", "192.0.2.3") })
	noName := r.checks(func() string { return r.login("probe", "cam-9", "", "192.0.2.4") })
	if thingID != noID || thingName != noName {
		t.Errorf("no password: a thing's client id checked %v, none %v; a thing's name %v, none %v", thingID, noID, thingName, noName)
	}
}

// TestManyLoginsOfOneNameAtOnceFromItsNetwork: a hub on an's network logs
// in 60 connections under her name at once (after a restart, none of them
// known to the credential cache yet): none is refused for being in flight
// together, where the name's limiter counted each as a possible failure
// and refused all past 20. Guesses from there stay limited: the test
// above.
func TestManyLoginsOfOneNameAtOnceFromItsNetwork(t *testing.T) {
	r := newLoginRig(t)
	if got := r.login("hub-0", "an", "an-pass", "192.0.2.10"); got != "" {
		t.Fatal(got)
	}
	r.creds.mu.Lock()
	r.creds.verified = map[[32]byte]string{} // a restart: every login is checked again
	r.creds.mu.Unlock()
	results := r.atOnce(60, func(i int) string {
		return r.login(fmt.Sprintf("hub-%d", i+1), "an", "an-pass", "192.0.2.10")
	})
	refused := 0
	for _, got := range results {
		if got != "" {
			refused++
		}
	}
	if refused > 0 {
		t.Errorf("%d of 60 logins of an from her network at once refused (%v)", refused, results)
	}
}

// TestGuessBurstFromTheOwnersNetworkIsPaidFor: 100 guesses sent at once
// from an's network get at most 64 checks, and the next guess from there
// waits for the burst's failures to leak away (20 per 15 minutes).
func TestGuessBurstFromTheOwnersNetworkIsPaidFor(t *testing.T) {
	r := newLoginRig(t)
	if got := r.login("an-phone", "an", "an-pass", "192.0.2.10"); got != "" {
		t.Fatal(got)
	}
	results := r.atOnce(100, func(i int) string {
		return r.login(fmt.Sprintf("g%d", i), "an", fmt.Sprintf("guess-%d", i), fmt.Sprintf("192.0.2.%d", 20+i))
	})
	checked := 0
	for _, got := range results {
		if got == "bad-password" {
			checked++
		}
	}
	if checked > 64 {
		t.Errorf("%d of 100 guesses sent at once from an's network checked (at most 64)", checked)
	}
	if got := r.login("g-next", "an", "guess-next", "192.0.2.200"); got != reasonNameLimited {
		t.Errorf("a guess from an's network after the burst: %q, want %q", got, reasonNameLimited)
	}
}
