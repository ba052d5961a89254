package hooks

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/golang-jwt/jwt/v5"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
	"github.com/veil-iot/veil/policies"
)

// Credentials holds the argon2id hashes of users' passwords and things'
// secrets, keyed "user:{name}" and "thing:{id}". It remembers successful
// verifications by a keyed digest (never the secret itself) so reconnect
// storms do not pay argon2id every time.
type Credentials struct {
	mu       sync.RWMutex
	hashes   map[string]string
	verified map[[32]byte]string // digest(key, secret) → hash it matched
	key      [32]byte
	hashing  chan struct{} // a slot per argon2id computation running
	// like holds, by kind of principal ("user:", "thing:", "factory:"),
	// the hash last stored of that kind; decoys, by parameters, a hash of
	// nothing: the secret of a principal that does not exist is checked
	// against a decoy made like its kind's hashes (absent).
	like   map[string]string
	decoys map[string]string
}

// kindOf returns principal's kind: up to and with its first ':'.
func kindOf(principal string) string {
	if i := strings.IndexByte(principal, ':'); i >= 0 {
		return principal[:i+1]
	}
	return ""
}

// hashSlots bounds the argon2id computations running at once. Each holds
// its hash's memory until it ends (64 MiB with Veil's parameters), so a
// connect storm — every device after a restart, or one client per
// address of an attacker's — would otherwise hold that many times the
// connections arriving, and leave the runtime returning gigabytes to the
// operating system afterwards. A verification runs on two threads (p=2),
// so half the processors keep the machine busy; later ones wait.
func hashSlots() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// NewCredentials returns an empty store.
func NewCredentials() *Credentials {
	c := &Credentials{hashes: map[string]string{}, verified: map[[32]byte]string{}, hashing: make(chan struct{}, hashSlots()),
		like: map[string]string{}, decoys: map[string]string{}}
	_, _ = rand.Read(c.key[:])
	return c
}

// Set stores principal's hash (a PHC argon2id string).
func (c *Credentials) Set(principal, hash string) {
	c.mu.Lock()
	c.hashes[principal] = hash
	c.like[kindOf(principal)] = hash
	c.mu.Unlock()
}

// Delete forgets principal's hash.
func (c *Credentials) Delete(principal string) {
	c.mu.Lock()
	delete(c.hashes, principal)
	c.mu.Unlock()
}

// Load replaces all hashes.
func (c *Credentials) Load(hashes map[string]string) {
	c.mu.Lock()
	c.hashes = make(map[string]string, len(hashes))
	for k, v := range hashes {
		c.hashes[k] = v
		c.like[kindOf(k)] = v
	}
	c.verified = map[[32]byte]string{}
	c.mu.Unlock()
}

func (c *Credentials) digest(principal string, secret []byte) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(principal))
	m.Write([]byte{0})
	m.Write(secret)
	var d [32]byte
	copy(d[:], m.Sum(nil))
	return d
}

// Verify reports whether secret matches principal's stored hash, waiting
// for an argon2id slot as long as it takes.
func (c *Credentials) Verify(principal string, secret []byte) bool {
	ok, _ := c.Check(principal, secret, 0)
	return ok
}

// Check is Verify giving up when no argon2id slot frees within wait (0:
// no limit), and then reporting busy: a client whose login waits longer
// has likely given up, and checking it anyway would only lengthen the
// queue of those behind it.
func (c *Credentials) Check(principal string, secret []byte, wait time.Duration) (ok, busy bool) {
	c.mu.RLock()
	hash, ok := c.hashes[principal]
	c.mu.RUnlock()
	if len(secret) == 0 {
		return false, false
	}
	if !ok {
		return false, c.absent(principal, secret, wait)
	}
	d := c.digest(principal, secret)
	c.mu.RLock()
	seen, hit := c.verified[d]
	c.mu.RUnlock()
	if hit && seen == hash {
		return true, false
	}
	if params, _, _, err := argon2id.DecodeHash(hash); err != nil || !runnable(params) {
		return false, false // argon2 would panic on it (a store written by hand)
	}
	if !c.takeSlot(wait) {
		return false, true
	}
	if match, err := c.compareInSlot(string(secret), hash); err != nil || !match {
		return false, false
	}
	c.mu.Lock()
	if c.hashes[principal] != hash {
		// Replaced while it was checked (a device enrolled again): the
		// secret it matched is void.
		c.mu.Unlock()
		return false, false
	}
	if len(c.verified) > 100_000 {
		c.verified = map[[32]byte]string{}
	}
	c.verified[d] = hash
	c.mu.Unlock()
	return true, false
}

// absent checks secret against a decoy made like the hashes of
// principal's kind (any kind's when it has none), and reports busy as
// Check does: a principal that does not exist is refused as slowly as a
// wrong secret, or the time of a refusal would tell who exists (users,
// things, serials).
func (c *Credentials) absent(principal string, secret []byte, wait time.Duration) (busy bool) {
	c.mu.RLock()
	like, ok := c.like[kindOf(principal)]
	if !ok {
		for _, like = range c.like {
			break
		}
	}
	c.mu.RUnlock()
	params, _, _, err := argon2id.DecodeHash(like)
	if err != nil {
		return false // an empty store: nobody exists, and nothing to hide
	}
	if !runnable(params) {
		params = argon2id.DefaultParams
	}
	return c.CompareDecoy(secret, params, wait)
}

// runnable reports whether argon2 can run with params: a hash with zero
// iterations, threads or key length decodes, and panics argon2.
func runnable(p *argon2id.Params) bool {
	return p.Iterations > 0 && p.Parallelism > 0 && p.KeyLength > 0 && p.SaltLength > 0 && p.Memory > 0
}

// CompareDecoy checks secret against a hash of nothing made with params,
// in an argon2id slot (at most wait for one, 0: no limit; busy if none
// came): what checking a secret costs, for a refusal that must not be
// quicker than one (an unknown thing's claim code, an unknown principal).
func (c *Credentials) CompareDecoy(secret []byte, params *argon2id.Params, wait time.Duration) (busy bool) {
	if !runnable(params) {
		params = argon2id.DefaultParams
	}
	kind := fmt.Sprintf("m=%d,t=%d,p=%d,s=%d,k=%d", params.Memory, params.Iterations, params.Parallelism, params.SaltLength, params.KeyLength)
	c.mu.RLock()
	decoy, ok := c.decoys[kind]
	c.mu.RUnlock()
	if !c.takeSlot(wait) {
		return true
	}
	if !ok {
		var nothing [16]byte
		_, _ = rand.Read(nothing[:])
		var err error
		if decoy, err = argon2id.CreateHash(string(nothing[:]), params); err != nil {
			<-c.hashing
			return false
		}
		c.mu.Lock()
		c.decoys[kind] = decoy
		c.mu.Unlock()
	}
	_, _ = c.compareInSlot(string(secret), decoy)
	return false
}

// takeSlot waits for an argon2id slot, at most wait unless wait is 0, and
// reports whether it got one.
func (c *Credentials) takeSlot(wait time.Duration) bool {
	select {
	case c.hashing <- struct{}{}:
		return true
	default:
	}
	if wait <= 0 {
		c.hashing <- struct{}{}
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case c.hashing <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// Compare checks secret against an argon2id hash, in one of the store's
// slots (hashSlots). The broker's argon2id goes through Verify, Check,
// Compare and Hash, except the bootstrap's at start, which bounds its own.
func (c *Credentials) Compare(secret, hash string) (bool, error) {
	c.takeSlot(0)
	return c.compareInSlot(secret, hash)
}

// compareInSlot compares in the slot its caller took, and frees it.
func (c *Credentials) compareInSlot(secret, hash string) (bool, error) {
	defer func() { <-c.hashing }()
	return argon2id.ComparePasswordAndHash(secret, hash)
}

// Hash returns the argon2id hash of secret with params, in one of the
// store's slots.
func (c *Credentials) Hash(secret string, params *argon2id.Params) (string, error) {
	c.takeSlot(0)
	defer func() { <-c.hashing }()
	return argon2id.CreateHash(secret, params)
}

// JWTConfig verifies bearer tokens sent as the password: signed by Key
// (an HMAC secret []byte, or a crypto.PublicKey), issued by Issuer, subject
// equal to the username, not expired.
type JWTConfig struct {
	Issuer   string
	Audience string // required: the aud a token for this broker names
	Key      any    // []byte (HMAC), *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// methods returns the signing methods of the key's family: a token is
// verified only by the algorithm its key is for.
func (c *JWTConfig) methods() []string {
	switch c.Key.(type) {
	case []byte:
		return []string{"HS256", "HS384", "HS512"}
	case *rsa.PublicKey:
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		return []string{"ES256", "ES384", "ES512"}
	case ed25519.PublicKey:
		return []string{"EdDSA"}
	}
	return nil
}

// Authenticator is the authentication hook.
type Authenticator struct {
	mqtt.HookBase
	engine   *policies.Engine
	creds    *Credentials
	sessions *Sessions
	server   *mqtt.Server
	limiter  *FailureLimiter
	serials  *FailureLimiter
	names    *FailureLimiter
	// knownNames limits a name from a network it logged in from lately.
	knownNames *FailureLimiter
	known      *knownAddresses
	jwt        *JWTConfig
	mayWill    func(p policies.Principal, topic string) bool
	log        zerolog.Logger
	metrics    *Metrics
}

// AuthConfig wires an Authenticator.
type AuthConfig struct {
	Engine      *policies.Engine
	Credentials *Credentials
	Sessions    *Sessions
	Server      *mqtt.Server
	Limiter     *FailureLimiter // nil: 10 failures per minute per address, 64 logins at once
	// SerialLimiter counts failed factory logins per serial, against
	// guessing one device's factory secret from many addresses; nil: 5
	// failures per 15 minutes.
	SerialLimiter *FailureLimiter
	// NameLimiter counts failed logins per username (a user's or a
	// thing's, or one nobody has), against guessing a secret from many
	// addresses; nil: 20 failures per 15 minutes.
	NameLimiter *FailureLimiter
	// KnownNameLimiter counts them apart from each network the name
	// logged in from lately; nil: 20 failures per 15 minutes, 64 logins
	// at once.
	KnownNameLimiter *FailureLimiter
	JWT              *JWTConfig // nil: no bearer tokens
	// MayPublish decides the will of a CONNECT, once its credentials are
	// good (Enforcer.MayPublish); nil: wills are decided when sent only.
	MayPublish func(p policies.Principal, topic string) bool
	Log        zerolog.Logger
	Metrics    *Metrics
}

// NewAuthenticator returns the hook.
func NewAuthenticator(c AuthConfig) *Authenticator {
	if c.Limiter == nil {
		c.Limiter = NewFailureLimiter(10, time.Minute, nil)
		// A household behind one address logs in all at once after a
		// restart; guessing is bounded per name and per serial too.
		c.Limiter.Burst = 54
	}
	if c.SerialLimiter == nil {
		c.SerialLimiter = NewFailureLimiter(5, 15*time.Minute, nil)
	}
	if c.NameLimiter == nil {
		c.NameLimiter = NewFailureLimiter(20, 15*time.Minute, nil)
	}
	if c.KnownNameLimiter == nil {
		c.KnownNameLimiter = NewFailureLimiter(20, 15*time.Minute, nil)
		c.KnownNameLimiter.Burst = 44
	}
	return &Authenticator{engine: c.Engine, creds: c.Credentials, sessions: c.Sessions, server: c.Server,
		limiter: c.Limiter, serials: c.SerialLimiter, names: c.NameLimiter, knownNames: c.KnownNameLimiter, known: newKnownAddresses(),
		jwt: c.JWT, mayWill: c.MayPublish, log: c.Log, metrics: c.Metrics}
}

// RememberNetworks keeps the networks names log in from in store, across
// restarts, as digests under key, and loads what it kept. Called before
// the broker serves.
func (a *Authenticator) RememberNetworks(key []byte, store NetworkStore) error {
	return a.known.keep(key, store, a.log)
}

// RefreshNetworks marks the networks of the connections still open as
// seen now, so that a name connected all along keeps its networks across
// a restart. The broker calls it once a day and when it stops.
func (a *Authenticator) RefreshNetworks() {
	if a.server == nil {
		return
	}
	var pairs [][2]string
	for _, cl := range a.server.Clients.GetAll() {
		if cl.Closed() || len(cl.Properties.Username) == 0 {
			continue
		}
		pairs = append(pairs, [2]string{string(cl.Properties.Username), remoteHost(cl.Net.Remote)})
	}
	a.known.refresh(pairs)
}

// ID names the hook.
func (a *Authenticator) ID() string { return "veil-auth" }

// Provides lists the events handled.
func (a *Authenticator) Provides(b byte) bool { return b == mqtt.OnConnectAuthenticate }

// OnConnectAuthenticate checks the credentials and binds the connection to
// its principal. The log names the client and the reason, never a secret.
func (a *Authenticator) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	addr := remoteHost(cl.Net.Remote)
	var p policies.Principal
	var admin bool
	reason := "rate-limited"
	if key := addressKey(addr); a.limiter.Try(key) {
		p, admin, reason = a.authenticate(cl, pk, addr)
		// A refusal before any secret was checked helps nobody guess one.
		a.limiter.Done(key, reason != "" && reason != reasonNameLimited && reason != "rate-limited" && reason != "busy" && reason != reasonClientID)
	}
	if reason != "" {
		a.log.Info().Str("client", clip(cl.ID)).Str("user", clip(string(pk.Connect.Username))).Str("remote", cl.Net.Remote).
			Str("reason", reason).Msg("connection refused")
		if a.metrics != nil {
			a.metrics.count("auth_refused")
		}
		return false
	}
	// The will is decided here, after the credentials: decided before them
	// (in OnConnect), a refusal told anyone who sent a CONNECT whether a
	// user may publish a topic. A refusal is its own CONNACK (not authorized,
	// where mochi would send bad credentials): the connection is stopped
	// first, so mochi's own CONNACK is never written. A will that would
	// retain a command is refused whoever may send it: commands are never
	// retained (RetainedCommandRule).
	if pk.Connect.WillFlag && (RetainedCommand(pk.Connect.WillTopic, pk.Connect.WillRetain) ||
		a.mayWill != nil && !a.mayWill(p, pk.Connect.WillTopic)) {
		a.log.Info().Str("client", cl.ID).Str("principal", p.String()).Str("reason", "will-refused").Msg("connection refused")
		if a.metrics != nil {
			a.metrics.count("will_refused")
		}
		if a.server != nil {
			_ = a.server.SendConnack(cl, packets.ErrNotAuthorized, false, nil)
		}
		cl.Stop(packets.ErrNotAuthorized)
		return false
	}
	a.sessions.put(cl, newSession(p, admin, userProperty(pk.Properties.User, PurposeProperty)))
	a.log.Debug().Str("client", cl.ID).Str("principal", p.String()).Msg("connected")
	return true
}

func (a *Authenticator) authenticate(cl *mqtt.Client, pk packets.Packet, addr string) (policies.Principal, bool, string) {
	name := string(pk.Connect.Username)
	if name == "" {
		return policies.Principal{}, false, "anonymous"
	}
	if cl.Net.Inline {
		return policies.Principal{}, false, "inline"
	}
	// A client id is a topic level ($config/replies/{id}/…, things/{id}/…):
	// with a '/' in it, client "app" could read the replies of "app/alice".
	if strings.ContainsAny(cl.ID, "/+#") {
		return policies.Principal{}, false, reasonClientID
	}
	// A device enrolling: client id enroll-{serial}, username
	// factory:{serial}, password its factory secret ("factory:{serial}" in
	// the credentials). It may only ask $enroll/{serial}.
	if serial, ok := strings.CutPrefix(name, FactoryUserPrefix); ok {
		return a.authenticateFactory(cl, serial, pk.Connect.Password)
	}
	// Guessing is limited per name too, as well as per address: past a
	// name's failures only the networks it logged in from lately are
	// still checked, so guessing from many addresses stops and the user
	// or thing does not. Names that exist and names that do not are
	// counted and refused alike: neither the answer nor its time tells
	// which exist.
	// From a network it logged in from lately, a name is counted apart:
	// a guesser there (on her LAN) is limited, and locks out no other. A
	// hub there may log in many connections under one name at once after
	// a restart: that limiter lets a burst be in flight, paid for after.
	key, names := nameKey(name), a.names
	if a.known.has(name, addr) {
		key, names = key+"@"+network(addr), a.knownNames
	}
	if !names.Try(key) {
		return policies.Principal{}, false, reasonNameLimited
	}
	failed := false
	defer func() { names.Done(key, failed) }()
	// A thing connects with client id = username = its id.
	if _, isThing := a.engine.Thing(name); isThing {
		if cl.ID != name {
			failed = !a.decoy("thing:", pk.Connect.Password)
			return policies.Principal{}, false, "thing-client-id-mismatch"
		}
		if a.jwt != nil && looksLikeJWT(pk.Connect.Password) {
			// As for a user and a name nobody has: no argon2id for a
			// token (a thing's secret never looks like one).
			a.verifyJWT("", string(pk.Connect.Password))
			failed = true
			return policies.Principal{}, false, "bad-secret"
		}
		if ok, busy := a.creds.Check("thing:"+name, pk.Connect.Password, loginSlotWait); !ok {
			failed = !busy
			return policies.Principal{}, false, cmp.Or(busyReason(busy), "bad-secret")
		}
		a.known.add(name, addr)
		return policies.ThingPrincipal(name), false, ""
	}
	// Nobody else may take a thing's client id (it would take over its session).
	if _, ok := a.engine.Thing(cl.ID); ok {
		failed = !a.decoy("user:", pk.Connect.Password)
		return policies.Principal{}, false, "client-id-is-a-thing"
	}
	u, ok := a.engine.User(name)
	if !ok {
		// Checked all the same (against a decoy): refused at once, an
		// unknown name would tell which users exist.
		busy := false
		if a.jwt != nil && looksLikeJWT(pk.Connect.Password) {
			a.verifyJWT(name, string(pk.Connect.Password)) // as for a user: no argon2id
		} else {
			_, busy = a.creds.Check("user:"+name, pk.Connect.Password, loginSlotWait)
		}
		failed = !busy
		return policies.Principal{}, false, cmp.Or(busyReason(busy), "unknown-user")
	}
	if ok, busy := a.userSecretOK(name, pk.Connect.Password); !ok {
		failed = !busy
		return policies.Principal{}, false, cmp.Or(busyReason(busy), "bad-password")
	}
	a.known.add(name, addr)
	// A client id belongs to one principal while its session exists.
	if a.server != nil {
		if existing, ok := a.server.Clients.Get(cl.ID); ok && !bytes.Equal(existing.Properties.Username, pk.Connect.Username) {
			return policies.Principal{}, false, "client-id-owned-by-another-user"
		}
	}
	return policies.UserPrincipal(name), u.Admin, ""
}

// reasonClientID refuses a client id that is not a topic level;
// reasonNameLimited a login, unchecked, past its name's failures.
const (
	reasonClientID    = "client-id-not-a-topic-level"
	reasonNameLimited = "name-rate-limited"
)

// decoy costs a refusal what checking password costs: a token's
// verification for a JWT-shaped one when bearer tokens are on, else an
// argon2id check against a decoy of kind. It reports busy as Check does.
func (a *Authenticator) decoy(kind string, password []byte) (busy bool) {
	if len(password) == 0 {
		return false // refused at once, as Check refuses it
	}
	if a.jwt != nil && looksLikeJWT(password) {
		a.verifyJWT("", string(password))
		return false
	}
	return a.creds.absent(kind, password, loginSlotWait)
}

// addressKey is the key of addr in the address limiter: an IPv6 address
// by its /64 (a host has all of its /64's addresses to guess from), an
// IPv4 address whole (many people share one behind a NAT).
func addressKey(addr string) string {
	if ip, err := netip.ParseAddr(addr); err == nil && !ip.Unmap().Is4() {
		return network(addr)
	}
	return addr
}

// nameKey is name as the name limiter keeps it: a digest of a long one (a
// username may be 64 KiB).
func nameKey(name string) string {
	if len(name) <= 128 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "#" + hex.EncodeToString(sum[:16])
}

// clip shortens what a client sent for a log line: a username or client
// id may be 64 KiB.
func clip(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}

// maxSerial bounds a factory serial's length: a CONNECT's username may be
// 64 KiB.
const maxSerial = 128

// FactoryUserPrefix starts the username of a device enrolling with its
// factory credential; EnrollClientPrefix its client id.
const (
	FactoryUserPrefix  = "factory:"
	EnrollClientPrefix = "enroll-"
)

func (a *Authenticator) authenticateFactory(cl *mqtt.Client, serial string, secret []byte) (policies.Principal, bool, string) {
	if serial == "" || len(serial) > maxSerial || strings.ContainsAny(serial, "/+#\x00") {
		return policies.Principal{}, false, "bad-serial"
	}
	if cl.ID != EnrollClientPrefix+serial {
		return policies.Principal{}, false, "enroll-client-id-mismatch"
	}
	if !a.serials.Try(serial) {
		return policies.Principal{}, false, "rate-limited"
	}
	failed := false
	defer func() { a.serials.Done(serial, failed) }()
	if ok, busy := a.creds.Check(FactoryUserPrefix+serial, secret, loginSlotWait); busy {
		return policies.Principal{}, false, "busy"
	} else if !ok {
		// Made-up serials too (at most maxSerial bytes each): counted
		// only if real, a blocked serial would tell that it is.
		failed = true
		return policies.Principal{}, false, "bad-factory-secret"
	}
	return policies.Principal{Kind: policies.KindDevice, ID: serial}, false, ""
}

func (a *Authenticator) userSecretOK(name string, password []byte) (ok, busy bool) {
	if a.jwt != nil && looksLikeJWT(password) {
		return a.verifyJWT(name, string(password)), false
	}
	return a.creds.Check("user:"+name, password, loginSlotWait)
}

// loginSlotWait is how long a CONNECT waits for an argon2id slot before it
// is refused as "busy" (not counted as a failed login). mochi answers
// every refused CONNECT with "bad username or password"; the log and
// /metrics say busy.
const loginSlotWait = 10 * time.Second

func busyReason(busy bool) string {
	if busy {
		return "busy"
	}
	return ""
}

func looksLikeJWT(b []byte) bool {
	return bytes.HasPrefix(b, []byte("eyJ")) && bytes.Count(b, []byte(".")) == 2
}

func (a *Authenticator) verifyJWT(name, token string) bool {
	claims := jwt.RegisteredClaims{}
	if a.jwt.Audience == "" {
		return false // a token for any application would do
	}
	_, err := jwt.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) { return a.jwt.Key, nil },
		jwt.WithIssuer(a.jwt.Issuer), jwt.WithAudience(a.jwt.Audience), jwt.WithSubject(name), jwt.WithExpirationRequired(),
		jwt.WithValidMethods(a.jwt.methods()))
	return err == nil
}

func remoteHost(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return strings.TrimSpace(remote)
}
