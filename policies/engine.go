package policies

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure an Engine. The zero value is usable: wall clock, UTC,
// no live-data context, a random-free all-zero pseudonymisation secret
// (set Secret in production), the default derivation table.
type Options struct {
	Clock    Clock
	Location *time.Location  // time zone of env.* conditions
	Context  ContextProvider // live values for data.* conditions
	// Secret keys pseudonymisation: each owner's key is HMAC(Secret, owner).
	Secret []byte
	// Derivations says what can be inferred from which stream; nil uses DefaultDerivations.
	Derivations Derivations
	// CacheEntries bounds the decision cache (per shard it is CacheEntries/shards); 0 means 1<<20.
	CacheEntries int
}

// maxPlaceDepth bounds place containment chains (and so cycles).
const maxPlaceDepth = 16

// maxUsersetDepth bounds userset resolution.
const maxUsersetDepth = 16

// Engine holds the metadata and answers access questions. It is safe for
// concurrent use: decisions run under a read lock, changes under a write
// lock, and every change invalidates exactly the cached decisions it may
// affect (by bumping a generation the cache entries recorded).
type Engine struct {
	clock   Clock
	loc     *time.Location
	context ContextProvider
	secret  []byte
	derive  Derivations

	mu       sync.RWMutex
	users    map[string]*User
	things   map[string]*Thing
	places   map[string]*Place
	rels     *relStore           // relationships, by object and by user on an object
	memberOf map[string][]string // "user:ruth" or "org:x#member" → usersets it belongs to
	policies map[string][]*compiled
	owners   genTable // per owner: their policies and their things' relationships
	subjects genTable // per principal: its attributes
	genSeed  maphash.Seed

	global  generation // memberships, places, things
	cache   *decisionCache
	changes atomic.Uint64 // configuration changes applied; see Changes
	rates   atomic.Int64  // policies with a rate constraint; see HasRates
}

// HasRates reports whether any policy in force has a rate constraint:
// what a rate needs (when a stream's reading before the first since start
// was taken: LiveValues.SeedFrom) is not worth an archive query otherwise.
func (e *Engine) HasRates() bool { return e.rates.Load() > 0 }

func (c *compiled) hasRate() bool { return c.view != nil && c.view.Rate() > 0 }

// countRate adds d for c if it has a rate constraint.
func (e *Engine) countRate(c *compiled, d int64) {
	if c.hasRate() {
		e.rates.Add(d)
	}
}

type generation struct{ n atomic.Uint64 }

func (g *generation) bump() { g.n.Add(1) }

// genTable holds generations, one per owner or per principal, found by a
// 64-bit hash of the name in a map the collector never scans: maps of
// names to pointers were a fifth of a loaded population's scanned heap.
// Names whose hashes collide would share a generation, so that a change
// for one would also invalidate the other's cached decisions: harmless.
// Generations are never freed, and never move (cached decisions point at
// them). Callers hold e.mu; get, for writing.
type genTable struct {
	ids    map[uint64]uint32
	blocks [][]generation // genBlock each
}

const genBlock = 256

func newGenTable() genTable { return genTable{ids: map[uint64]uint32{}} }

// find returns the generation for h, or nil.
func (t *genTable) find(h uint64) *generation {
	id, ok := t.ids[h]
	if !ok {
		return nil
	}
	return &t.blocks[id/genBlock][id%genBlock]
}

// get returns the generation for h, creating it.
func (t *genTable) get(h uint64) *generation {
	if g := t.find(h); g != nil {
		return g
	}
	id := uint32(len(t.ids))
	if id%genBlock == 0 {
		t.blocks = append(t.blocks, make([]generation, genBlock))
	}
	t.ids[h] = id
	return &t.blocks[id/genBlock][id%genBlock]
}

func (e *Engine) ownerKey(owner string) uint64 { return maphash.String(e.genSeed, owner) }

// subjectKey keeps a user and a thing of the same name apart.
func (e *Engine) subjectKey(p Principal) uint64 {
	return maphash.String(e.genSeed, p.ID) ^ uint64(p.Kind)*0x9E3779B97F4A7C15
}

// NewEngine returns an empty engine.
func NewEngine(o Options) *Engine {
	if o.Clock == nil {
		o.Clock = SystemClock{}
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.Derivations == nil {
		o.Derivations = DefaultDerivations
	}
	e := &Engine{
		clock: o.Clock, loc: o.Location, context: o.Context, secret: o.Secret, derive: o.Derivations,
		users: map[string]*User{}, things: map[string]*Thing{}, places: map[string]*Place{},
		rels:     newRelStore(0),
		memberOf: map[string][]string{}, policies: map[string][]*compiled{},
		owners: newGenTable(), subjects: newGenTable(), genSeed: maphash.MakeSeed(),
	}
	e.cache = newDecisionCache(o.CacheEntries, &e.global)
	return e
}

func (e *Engine) bumpOwner(owner string) { e.owners.get(e.ownerKey(owner)).bump() }

// bumpPolicyOwner invalidates what a change to owner's policies may affect:
// decisions on owner's things, and, when owner owns or co-owns things
// through relationships, decisions on those too. A decision depends on
// the generations of the candidate owners it reached, which need not
// include a co-owner whose policies it never reached (or who had none),
// so those are invalidated through the global generation.
func (e *Engine) bumpPolicyOwner(owner string) {
	e.bumpOwner(owner)
	if e.rels.coOwns(owner) {
		e.global.bump()
	}
}
func (e *Engine) bumpSubject(p Principal)  { e.subjects.get(e.subjectKey(p)).bump() }
func (e *Engine) ensureOwner(owner string) { e.owners.get(e.ownerKey(owner)) }

// ---- changes ----

// PutUser adds or replaces a user.
func (e *Engine) PutUser(u User) error {
	attrs, err := u.Attributes.Normalize()
	if err != nil {
		return err
	}
	if u.Name == "" {
		return errors.New("user name must not be empty")
	}
	u.Attributes = attrs
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	e.putUser(&u)
	return nil
}

// putUser stores u, which the engine owns from now on.
func (e *Engine) putUser(u *User) {
	e.users[u.Name] = u
	e.bumpSubject(UserPrincipal(u.Name))
	e.ensureOwner(u.Name)
}

// DeleteUser removes a user; its relationships and policies stay until removed.
func (e *Engine) DeleteUser(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	delete(e.users, name)
	e.bumpSubject(UserPrincipal(name))
}

// PutThing adds or replaces a thing.
func (e *Engine) PutThing(t Thing) error {
	attrs, err := t.Attributes.Normalize()
	if err != nil {
		return err
	}
	if t.ID == "" || strings.ContainsAny(t.ID, "/+#\x00") {
		return fmt.Errorf("thing id %q: must be a non-empty MQTT topic level", t.ID)
	}
	t.Attributes = attrs
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	e.putThing(&t)
	return nil
}

// putThing stores t, which the engine owns from now on.
func (e *Engine) putThing(t *Thing) {
	e.things[t.ID] = t
	e.ensureOwner(t.Owner)
	e.bumpSubject(ThingPrincipal(t.ID))
	e.global.bump()
}

// DeleteThing removes a thing.
func (e *Engine) DeleteThing(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	delete(e.things, id)
	e.bumpSubject(ThingPrincipal(id))
	e.global.bump()
}

// PutPlace adds or replaces a place.
func (e *Engine) PutPlace(p Place) error {
	attrs, err := p.Attributes.Normalize()
	if err != nil {
		return err
	}
	if p.ID == "" {
		return errors.New("place id must not be empty")
	}
	p.Attributes = attrs
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	e.places[p.ID] = &p
	e.global.bump()
	return nil
}

// DeletePlace removes a place.
func (e *Engine) DeletePlace(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	delete(e.places, id)
	e.global.bump()
}

// PutRelationship adds or replaces the relationship identified by its
// object, user and relation.
func (e *Engine) PutRelationship(r Relationship) error {
	if err := r.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	e.putRelationship(r)
	e.invalidateObject(&r)
	return nil
}

// putRelationship indexes r; callers invalidate (Load bumps everything once).
func (e *Engine) putRelationship(r Relationship) { e.rels.put(&r) }

// invalidateObject bumps what a relationship change may affect.
func (e *Engine) invalidateObject(r *Relationship) {
	if r.Place != "" {
		e.global.bump()
		return
	}
	owner := ""
	if t := e.things[r.Thing]; t != nil {
		owner = t.Owner
	}
	e.bumpOwner(owner)
}

// DeleteRelationship removes the relationship of user on the thing or place
// (exactly one of thing, place set) with that relation.
func (e *Engine) DeleteRelationship(thing, place, user string, rel Relation) {
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	r := Relationship{Thing: thing, Place: place, User: user, Relation: rel}
	if e.rels.remove(thing, place, user, rel) {
		e.invalidateObject(&r)
	}
}

// PutMembership adds a member to a userset.
func (e *Engine) PutMembership(m Membership) error {
	if m.Group == "" || m.Relation == "" || m.Member == "" {
		return errors.New("membership needs group, relation and member")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	e.putMembership(m)
	return nil
}

func (e *Engine) putMembership(m Membership) {
	us := m.Userset()
	if !slices.Contains(e.memberOf[m.Member], us) {
		e.memberOf[m.Member] = append(e.memberOf[m.Member], us)
	}
	e.global.bump()
}

// DeleteMembership removes a member from a userset.
func (e *Engine) DeleteMembership(m Membership) {
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	us := m.Userset()
	list := slices.DeleteFunc(e.memberOf[m.Member], func(s string) bool { return s == us })
	if len(list) == 0 {
		delete(e.memberOf, m.Member)
	} else {
		e.memberOf[m.Member] = list
	}
	e.global.bump()
}

// PutPolicy adds or replaces owner's policy p.ID. p must come from
// ParsePolicy (or pass it); an error leaves the previous policy in force.
func (e *Engine) PutPolicy(owner string, p Policy) error {
	if owner == "" {
		return errors.New("policy owner must not be empty")
	}
	c, err := compilePolicy(owner, p, e.ownerSecret(owner))
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	e.putCompiled(c)
	return nil
}

func (e *Engine) putCompiled(c *compiled) {
	list := slices.DeleteFunc(e.policies[c.owner], func(x *compiled) bool {
		if x.id == c.id {
			e.countRate(x, -1)
			return true
		}
		return false
	})
	e.countRate(c, 1)
	i, _ := slices.BinarySearchFunc(list, c, comparePolicies)
	e.policies[c.owner] = slices.Insert(list, i, c)
	e.rels.setPolicyOwner(c.owner, true)
	e.bumpPolicyOwner(c.owner)
}

// DeletePolicy removes owner's policy id; it reports whether it existed.
func (e *Engine) DeletePolicy(owner, id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	list := e.policies[owner]
	n := len(list)
	list = slices.DeleteFunc(list, func(x *compiled) bool {
		if x.id == id {
			e.countRate(x, -1)
			return true
		}
		return false
	})
	if len(list) == n {
		return false
	}
	if len(list) == 0 {
		delete(e.policies, owner)
		e.rels.setPolicyOwner(owner, false)
	} else {
		e.policies[owner] = list
	}
	e.bumpPolicyOwner(owner)
	return true
}

// ViewFor compiles cs as a policy of owner's would be: a view kept outside
// the engine, as its constraints and whose policy it came from, is the same
// view again (the same key; pseudonyms under the owner's key).
func (e *Engine) ViewFor(owner string, cs []Constraint) (*View, error) {
	return NewView(e.ownerSecret(owner), cs)
}

// ownerSecret is the owner's pseudonymisation key.
func (e *Engine) ownerSecret(owner string) []byte {
	m := hmac.New(sha256.New, e.secret)
	m.Write([]byte(owner))
	return m.Sum(nil)
}

// Load replaces the whole state with a snapshot. Every item is checked
// first; on any error nothing changes and all problems are reported.
//
// The engine keeps its own compact copy (see packer and relStore): of s it
// references afterwards only memberships, policy constraints (one of each
// distinct list) and one of each distinct policy condition, so a caller
// that drops s leaves few small objects of it behind. Equal attributes,
// and equal lists of streams, are kept once.
func (e *Engine) Load(s Snapshot) error {
	var errs []error
	pk := newPacker()
	users := make([]User, 0, len(s.Users))
	for i, u := range s.Users {
		a, err := u.Attributes.Normalize()
		if err != nil || u.Name == "" {
			errs = append(errs, fmt.Errorf("users[%d]: %v", i, errOr(err, "name must not be empty")))
			continue
		}
		u.Name, u.Attributes = pk.str(u.Name), pk.attrs(a)
		users = append(users, u)
	}
	things := make([]Thing, 0, len(s.Things))
	for i, t := range s.Things {
		a, err := t.Attributes.Normalize()
		if err != nil || t.ID == "" {
			errs = append(errs, fmt.Errorf("things[%d]: %v", i, errOr(err, "id must not be empty")))
			continue
		}
		t.ID, t.Owner, t.Kind, t.Place, t.Attributes = pk.str(t.ID), pk.str(t.Owner), pk.str(t.Kind), pk.str(t.Place), pk.attrs(a)
		t.Streams = pk.sharedList(t.Streams)
		things = append(things, t)
	}
	places := make([]Place, 0, len(s.Places))
	for i, p := range s.Places {
		a, err := p.Attributes.Normalize()
		if err != nil || p.ID == "" {
			errs = append(errs, fmt.Errorf("places[%d]: %v", i, errOr(err, "id must not be empty")))
			continue
		}
		p.ID, p.Owner, p.Parent, p.Attributes = pk.str(p.ID), pk.str(p.Owner), pk.str(p.Parent), pk.attrs(a)
		places = append(places, p)
	}
	for i, r := range s.Relationships {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("relationships[%d]: %v", i, err))
		}
	}
	compiledPolicies := make([]*compiled, 0, len(s.Policies))
	secrets := map[string][]byte{}
	for i, op := range s.Policies {
		key, ok := secrets[op.Owner]
		if !ok {
			key = e.ownerSecret(op.Owner)
			secrets[op.Owner] = key
		}
		c, err := compilePacked(op.Owner, op.Policy, key, pk)
		if err != nil {
			errs = append(errs, fmt.Errorf("policies[%d] (%s/%s): %v", i, op.Owner, op.Policy.ID, err))
			continue
		}
		compiledPolicies = append(compiledPolicies, c)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	rels := newRelStore(len(s.Relationships))
	rels.putAll(s.Relationships)

	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.changes.Add(1)
	e.users = make(map[string]*User, len(users))
	e.things = make(map[string]*Thing, len(things))
	e.places = make(map[string]*Place, len(places))
	e.rels = rels
	e.memberOf = map[string][]string{}
	e.policies = map[string][]*compiled{}
	// Entries cached before the load are stale: the global generation
	// moves below, and every cache entry checks it.
	for i := range users {
		e.putUser(&users[i])
	}
	for i := range things {
		e.putThing(&things[i])
	}
	for i := range places {
		e.places[places[i].ID] = &places[i]
	}
	for _, m := range s.Memberships {
		e.putMembership(m)
	}
	rates := int64(0)
	for _, c := range compiledPolicies {
		e.policies[c.owner] = append(e.policies[c.owner], c)
		e.ensureOwner(c.owner)
		if c.hasRate() {
			rates++
		}
	}
	e.rates.Store(rates)
	for owner, list := range e.policies {
		slices.SortFunc(list, comparePolicies)
		rels.setPolicyOwner(owner, true)
	}
	e.global.bump()
	return nil
}

func errOr(err error, msg string) any {
	if err != nil {
		return err
	}
	return msg
}

// ---- lookups for the control plane ----

// User returns a copy of the named user.
func (e *Engine) User(name string) (User, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	u := e.users[name]
	if u == nil {
		return User{}, false
	}
	c := *u
	c.Attributes = maps.Clone(u.Attributes) // shared with other users after a Load
	return c, true
}

// Thing returns a copy of the thing.
func (e *Engine) Thing(id string) (Thing, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	t := e.things[id]
	if t == nil {
		return Thing{}, false
	}
	c := *t
	c.Attributes, c.Streams = maps.Clone(t.Attributes), slices.Clone(t.Streams) // shared with other things after a Load
	return c, true
}

// Place returns a copy of the place.
func (e *Engine) Place(id string) (Place, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	p := e.places[id]
	if p == nil {
		return Place{}, false
	}
	c := *p
	c.Attributes = maps.Clone(p.Attributes)
	return c, true
}

// Policies returns owner's policies in evaluation order, each equal to
// the one put (put back together from its compiled form: see compiled).
func (e *Engine) Policies(owner string) []Policy {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]Policy, len(e.policies[owner]))
	for i, c := range e.policies[owner] {
		out[i] = c.source()
	}
	return out
}

// Relationships returns the relationships directly on a thing or place
// (exactly one of thing, place set), ordered by user and relation.
func (e *Engine) Relationships(thing, place string) []Relationship {
	e.mu.RLock()
	defer e.mu.RUnlock()
	rs := e.rels
	obj, ok := rs.object(thing, place)
	if !ok {
		return nil
	}
	var out []Relationship
	for i := rs.objFirst(obj); i != 0; i = rs.recs[i].objNext {
		out = append(out, rs.relationship(i))
	}
	slices.SortFunc(out, func(a, b Relationship) int {
		if c := strings.Compare(a.User, b.User); c != 0 {
			return c
		}
		return strings.Compare(string(a.Relation), string(b.Relation))
	})
	return out
}

// ---- evaluation ----

// evalCtx carries one evaluation: what it looked at decides how long its
// answer may be cached.
type evalCtx struct {
	e              *Engine
	req            Request
	ownersBuf      [4]string
	res            Resource
	thing          *Thing
	user           *User
	requesterThing *Thing
	values         ContextProvider // data.* values, when not the engine's
	now            time.Time
	nowPacked      packedTime // now, once a relationship window needed it
	hasNowPacked   bool
	localNow       time.Time
	hasLocal       bool
	expires        time.Time
	dynamic        bool
	deps           [maxDeps]depRef
	ndeps          int
	uncacheable    bool
}

func (x *evalCtx) local() time.Time {
	if !x.hasLocal {
		x.localNow, x.hasLocal = x.now.In(x.e.loc), true
	}
	return x.localNow
}

// expireAt records that the answer may change at t.
func (x *evalCtx) expireAt(t time.Time) {
	if !t.After(x.now) {
		// A boundary already passed would leave the answer cached for ever:
		// it expires at once instead, so it is asked again every time.
		t = x.now
	}
	if x.expires.IsZero() || t.Before(x.expires) {
		x.expires = t
	}
}

// dependOwner and dependSubject record a generation the answer depends on.
func (x *evalCtx) dependOwner(owner string)  { x.depend(x.e.owners.find(x.e.ownerKey(owner))) }
func (x *evalCtx) dependSubject(p Principal) { x.depend(x.e.subjects.find(x.e.subjectKey(p))) }

func (x *evalCtx) depend(g *generation) {
	if g == nil {
		x.uncacheable = true
		return
	}
	for i := 0; i < x.ndeps; i++ {
		if x.deps[i].g == g {
			return
		}
	}
	if x.ndeps == maxDeps {
		x.uncacheable = true
		return
	}
	x.deps[x.ndeps] = depRef{g: g, n: g.n.Load()}
	x.ndeps++
}

// inWindow checks a relationship's window at now and records its next boundary.
//
// It compares the packed instants with now's and builds a time.Time only
// for a boundary earlier than the expiry recorded so far.
func (x *evalCtx) inWindow(r *relRec) bool {
	if !x.hasNowPacked {
		x.nowPacked, x.hasNowPacked = packedTime{sec: x.now.Unix(), nsec: int32(x.now.Nanosecond())}, true
	}
	if r.from.loc != 0 && x.nowPacked.before(r.from) {
		if x.expiresBefore(r.from) {
			x.expireAt(x.e.rels.time(r.from))
		}
		return false
	}
	if r.until.loc != 0 {
		if r.until.before(x.nowPacked) {
			return false
		}
		if next := r.until.next(); x.expiresBefore(next) {
			x.expireAt(x.e.rels.time(r.until).Add(time.Nanosecond))
		}
	}
	return true
}

// expiresBefore reports whether t may move the expiry recorded so far
// (none yet, or a later one); expireAt decides.
func (x *evalCtx) expiresBefore(t packedTime) bool {
	if x.expires.IsZero() {
		return true
	}
	return t.before(packedTime{sec: x.expires.Unix(), nsec: int32(x.expires.Nanosecond())})
}

// active reports whether r is active and in its window at now.
func (x *evalCtx) active(r *relRec) bool { return r.status == statActive && x.inWindow(r) }

// Decide answers one request, from the cache when it can.
func (e *Engine) Decide(req Request) Decision { return *e.DecideShared(&req) }

// DecideShared is Decide for the delivery path: the decision it returns may
// be the cache's own, shared by every caller and never to be modified, and
// req is not copied. A decision is 144 bytes; copying it (and the request)
// through the hooks was most of what deciding a delivery from the cache
// cost.
func (e *Engine) DecideShared(req *Request) *Decision {
	if c := e.cache.get(req, e.clock); c != nil {
		return &c.d
	}
	e.mu.RLock()
	x := evalCtx{e: e, req: *req, now: e.clock.Now()}
	d := e.evaluate(&x)
	gl := e.global.n.Load()
	e.mu.RUnlock()
	d.Expires = x.expires
	d.Dynamic = x.dynamic
	if !x.dynamic && !x.uncacheable {
		return &e.cache.put(req, d, gl, x.deps[:x.ndeps]).d
	}
	return &d
}

// DecideAt evaluates req as of at, without the cache: for a message queued
// at at and written now, whose time-bound rights are those of then. Live
// data (data.*) are read as they are now: their past is not kept.
func (e *Engine) DecideAt(req Request, at time.Time) Decision {
	e.mu.RLock()
	defer e.mu.RUnlock()
	x := evalCtx{e: e, req: req, now: at}
	d := e.evaluate(&x)
	d.Expires = x.expires
	d.Dynamic = x.dynamic
	return d
}

// DecideAtWith is DecideAt reading data.* from values, the live values as
// they were at at: for an archived reading, decided as a live delivery of
// it was. values is called under the engine's read lock: it must answer
// from memory (a value it does not have is a missing attribute).
func (e *Engine) DecideAtWith(req Request, at time.Time, values ContextProvider) Decision {
	e.mu.RLock()
	defer e.mu.RUnlock()
	x := evalCtx{e: e, req: req, now: at, values: values}
	d := e.evaluate(&x)
	d.Expires = x.expires
	d.Dynamic = x.dynamic
	return d
}

// DecideUncached evaluates without the cache (benchmarks, audits).
func (e *Engine) DecideUncached(req Request) Decision {
	e.mu.RLock()
	defer e.mu.RUnlock()
	x := evalCtx{e: e, req: req, now: e.clock.Now()}
	d := e.evaluate(&x)
	d.Expires = x.expires
	d.Dynamic = x.dynamic
	return d
}

func deny(rule string) Decision { return Decision{Effect: Deny, Rule: rule} }

// evaluate runs the built-in rules, then the policies. Callers hold e.mu.
func (e *Engine) evaluate(x *evalCtx) Decision {
	req := &x.req
	res, ok := ParseTopic(req.Topic)
	if !ok || !req.Action.Valid() {
		x.uncacheable = true
		return deny("unknown-topic")
	}
	x.res = res
	x.thing = e.things[res.Thing]
	if x.thing == nil {
		x.uncacheable = true
		return deny("unknown-thing")
	}
	switch req.Principal.Kind {
	case KindUser:
		x.user = e.users[req.Principal.ID]
		if x.user == nil {
			x.uncacheable = true
			return deny("unknown-principal")
		}
	case KindThing:
		x.requesterThing = e.things[req.Principal.ID]
		if x.requesterThing == nil {
			x.uncacheable = true
			return deny("unknown-principal")
		}
	default:
		return deny("unknown-principal")
	}
	x.dependSubject(req.Principal)
	x.dependOwner(x.thing.Owner)
	base := Decision{Owner: x.thing.Owner, Thing: res.Thing}
	if res.Kind == ResData {
		base.Stream = res.Name
	}

	if rule := e.builtin(x); rule != "" {
		base.Effect, base.Rule = Allow, rule
		return base
	}

	owners := e.policyOwners(x)
	depended := x.thing.Owner // one map lookup per owner, not per policy
	for _, c := range e.candidates(owners) {
		if c.owner != depended {
			x.dependOwner(c.owner)
			depended = c.owner
		}
		if !c.applies(req, res) || !e.subjectMatches(x, c) {
			continue
		}
		if c.when != nil && !c.when.eval(x) {
			continue
		}
		base.Rule, base.PolicyID, base.PolicyOwner = "policy", c.id, c.owner
		if c.allow {
			base.Effect = Allow
			base.View = c.view
		}
		return base
	}
	base.Rule = "default"
	return base
}

// builtin applies the relation rules; it returns the granting rule or "".
func (e *Engine) builtin(x *evalCtx) string {
	res, act := x.res, x.req.Action
	if t := x.requesterThing; t != nil {
		if t.ID != res.Thing {
			return ""
		}
		switch {
		case act == ActPublish && res.Kind == ResState,
			act == ActPublish && res.Kind == ResData && (len(t.Streams) == 0 || slices.Contains(t.Streams, res.Name)),
			act == ActRead && (res.Kind == ResCommand || res.Kind == ResState):
			return "self"
		}
		return ""
	}
	name := x.user.Name
	if x.thing.Owner == name {
		return "owner"
	}
	var held [len(relations)]bool
	rs := e.rels
	if uid, ok := rs.names.lookup(name); ok {
		// The object's whole chain rather than the user's (through the
		// pairs index): policyOwners walks it next anyway, and a lookup in
		// a map of a million pairs costs more than the records it saves.
		e.eachObject(x.thing, func(obj uint32) bool {
			for i := rs.objFirst(obj); i != 0; i = rs.recs[i].objNext {
				if r := &rs.recs[i]; r.user == uid && x.active(r) {
					held[r.relation] = true
				}
			}
			return true
		})
	}
	owner, coOwner, installer, visitor := held[relOwner], held[relCoOwner], held[relInstaller], held[relVisitor]
	switch {
	case owner:
		return "owner"
	case coOwner:
		return "co_owner"
	case installer && x.thing.Owner == "" && !e.ownerInForce(x) &&
		(act == ActRead && res.Kind == ResState || act == ActCommand && res.Kind == ResCommand || act == ActConfigure && res.Kind == ResDocument):
		return "installer"
	case visitor && (act == ActRead && res.Kind == ResState || act == ActCommand && res.Kind == ResCommand):
		return "visitor"
	}
	return ""
}

// ownerInForce reports whether any owner relationship is active on the
// thing or a place containing it: the installer's hand-over is complete.
func (e *Engine) ownerInForce(x *evalCtx) bool {
	found := false
	rs := e.rels
	e.eachObject(x.thing, func(obj uint32) bool {
		for i := rs.objFirst(obj); i != 0; i = rs.recs[i].objNext {
			if r := &rs.recs[i]; r.relation == relOwner && x.active(r) {
				found = true
				return false
			}
		}
		return true
	})
	return found
}

// eachObject visits the relationship objects (see relStore) of the thing
// and of every place containing it, nearest first, until fn returns false.
// Place relations depend on the global generation, which every cache entry
// checks.
func (e *Engine) eachObject(t *Thing, fn func(obj uint32) bool) {
	if obj, ok := e.rels.object(t.ID, ""); ok && !fn(obj) {
		return
	}
	place := t.Place
	for depth := 0; place != "" && depth < maxPlaceDepth; depth++ {
		if obj, ok := e.rels.object("", place); ok && !fn(obj) {
			return
		}
		p := e.places[place]
		if p == nil {
			return
		}
		place = p.Parent
	}
}

// policyOwners are the users whose policies govern the thing: its owner of
// record, and every active owner or co-owner.
func (e *Engine) policyOwners(x *evalCtx) []string {
	owners := x.ownersBuf[:0]
	if x.thing.Owner != "" {
		owners = append(owners, x.thing.Owner)
	}
	rs := e.rels
	e.eachObject(x.thing, func(obj uint32) bool {
		for i := rs.objFirst(obj); i != 0; i = rs.recs[i].objNext {
			r := &rs.recs[i]
			// An owner without policies adds no candidates (most
			// co-owners): its name is not even looked at.
			if (r.relation == relOwner || r.relation == relCoOwner) && x.active(r) && rs.isPolicyOwner(r.user) {
				if user := rs.names.name(r.user); !slices.Contains(owners, user) {
					owners = append(owners, user)
				}
			}
		}
		return true
	})
	return owners
}

// candidates merges the owners' policy lists in evaluation order.
func (e *Engine) candidates(owners []string) []*compiled {
	// Most co-owners have no policies of their own: with one list left
	// it is the answer as it stands (already in evaluation order).
	var lists [4][]*compiled
	nonEmpty, n := lists[:0], 0
	for _, o := range owners {
		if l := e.policies[o]; len(l) > 0 {
			nonEmpty = append(nonEmpty, l)
			n += len(l)
		}
	}
	switch len(nonEmpty) {
	case 0:
		return nil
	case 1:
		return nonEmpty[0]
	}
	all := make([]*compiled, 0, n)
	for _, l := range nonEmpty {
		all = append(all, l...)
	}
	slices.SortStableFunc(all, comparePolicies)
	return all
}

// subjectMatches reports whether the policy names the requester.
func (e *Engine) subjectMatches(x *evalCtx, c *compiled) bool {
	for _, s := range c.subjects {
		if e.subjectMatch(x, s) {
			return true
		}
	}
	return false
}

func (e *Engine) subjectMatch(x *evalCtx, s subject) bool {
	p := x.req.Principal
	switch s.kind {
	case subjAny:
		return true
	case subjUser:
		return p.Kind == KindUser && p.ID == s.value
	case subjThing:
		return p.Kind == KindThing && p.ID == s.value
	case subjRole:
		v, ok := x.requesterAttr("role")
		return ok && v == s.value
	case subjRelation:
		if x.user == nil {
			return false
		}
		rs := e.rels
		uid, ok := rs.names.lookup(x.user.Name)
		if !ok {
			return false
		}
		held := false
		e.eachObject(x.thing, func(obj uint32) bool {
			for i := rs.first(obj, uid); i != 0; i = rs.recs[i].next {
				if r := &rs.recs[i]; string(relations[r.relation]) == s.value && x.active(r) {
					held = true
					return false
				}
			}
			return true
		})
		return held
	case subjUserset:
		return e.inUserset(p.String(), s.value)
	}
	return false
}

// inUserset resolves membership transitively (breadth first, bounded).
func (e *Engine) inUserset(member, userset string) bool {
	frontier := []string{member}
	seen := map[string]bool{member: true}
	for depth := 0; len(frontier) > 0 && depth < maxUsersetDepth; depth++ {
		var next []string
		for _, m := range frontier {
			for _, us := range e.memberOf[m] {
				if us == userset {
					return true
				}
				if !seen[us] {
					seen[us] = true
					next = append(next, us)
				}
			}
		}
		frontier = next
	}
	return false
}

// ---- relationship store ----

// relations and statuses are the codes relRec stores, in code order.
var (
	relations = [...]Relation{relOwner: RelOwner, relCoOwner: RelCoOwner, relInstaller: RelInstaller, relVisitor: RelVisitor}
	statuses  = [...]Status{statPending: StatusPending, statActive: StatusActive, statRevoked: StatusRevoked}
)

const (
	relOwner uint8 = iota
	relCoOwner
	relInstaller
	relVisitor
)

const (
	statPending uint8 = iota
	statActive
	statRevoked
)

func relCode(r Relation) (uint8, bool) {
	i := slices.Index(relations[:], r)
	return uint8(i), i >= 0
}

func statusCode(s Status) uint8 { return uint8(max(slices.Index(statuses[:], s), 0)) }

// relStore holds the relationship tuples without heap pointers, so that the
// garbage collector has nothing to mark in them however many there are (a
// million tuples as pointers were most of a large deployment's heap, and
// every collection cycle marked them again): names are interned as integer
// ids, the tuples live in one slice of plain records, and the indexes are
// maps and slices of integers.
//
// An object is a thing or a place: its name's id shifted left, with the low
// bit set for a place. Tuples are chained two ways, by index into recs (0
// is no tuple; recs[0] is unused): a user's tuples on an object (at most one
// per relation, in the order they were put) from pairs, and all tuples on an
// object (in no particular order) from objHead.
type relStore struct {
	names   nameTable
	locs    []*time.Location // time zones of the windows' times, see packedTime
	recs    []relRec
	free    int32            // first free record, chained through next; 0 none
	pairs   map[uint64]int32 // object<<32 | user → the user's first tuple on the object
	objHead []int32          // object → a first tuple on it
	// policyOwners is a bit per name id: set when a user of that name owns policies.
	policyOwners []uint64
	// owning counts each user's owner and co-owner tuples (any status).
	owning map[uint32]int32
}

type relRec struct {
	obj, user        uint32
	next             int32 // the user's next tuple on the object
	objNext, objPrev int32 // the object's other tuples
	relation, status uint8
	from, until      packedTime
}

// packedTime is a time.Time without its pointer: loc indexes relStore.locs
// (from 1); 0 is the zero time. The monotonic clock reading is dropped.
type packedTime struct {
	sec  int64
	nsec int32
	loc  uint16
}

// before reports whether instant p is before q (both non-zero).
func (p packedTime) before(q packedTime) bool {
	return p.sec < q.sec || p.sec == q.sec && p.nsec < q.nsec
}

// next is the instant one nanosecond after p.
func (p packedTime) next() packedTime {
	if p.nsec++; p.nsec == 1e9 {
		p.sec, p.nsec = p.sec+1, 0
	}
	return p
}

func newRelStore(n int) *relStore {
	return &relStore{names: newNameTable(), recs: make([]relRec, 1, n+1), pairs: make(map[uint64]int32, n), owning: map[uint32]int32{}}
}

func (s *relStore) packTime(t time.Time) packedTime {
	if t.IsZero() {
		return packedTime{}
	}
	loc := t.Location()
	i := slices.Index(s.locs, loc)
	if i < 0 {
		if len(s.locs) == 1<<16-1 { // absurdly many zones: the same instant in UTC
			return s.packTime(t.UTC())
		}
		s.locs = append(s.locs, loc)
		i = len(s.locs) - 1
	}
	return packedTime{sec: t.Unix(), nsec: int32(t.Nanosecond()), loc: uint16(i + 1)}
}

func (s *relStore) time(p packedTime) time.Time {
	if p.loc == 0 {
		return time.Time{}
	}
	return time.Unix(p.sec, int64(p.nsec)).In(s.locs[p.loc-1])
}

// object returns the object id of the thing, or of the place when place is
// set; ok is false when no relationship ever named it.
func (s *relStore) object(thing, place string) (uint32, bool) {
	if place != "" {
		id, ok := s.names.lookup(place)
		return id<<1 | 1, ok
	}
	id, ok := s.names.lookup(thing)
	return id << 1, ok
}

func pairKey(obj, user uint32) uint64 { return uint64(obj)<<32 | uint64(user) }

// setPolicyOwner records whether name owns policies. The set lives with
// the names (Load fills a new store's) so that a thing's co-owners can be
// skipped by id when they own none, which most do.
func (s *relStore) setPolicyOwner(name string, on bool) {
	id := s.names.intern(name)
	w := int(id / 64)
	if w >= len(s.policyOwners) {
		if !on {
			return
		}
		s.policyOwners = append(s.policyOwners, make([]uint64, w+1-len(s.policyOwners))...)
	}
	if on {
		s.policyOwners[w] |= 1 << (id % 64)
	} else {
		s.policyOwners[w] &^= 1 << (id % 64)
	}
}

// coOwns reports whether the user called name holds an owner or
// co-owner tuple on anything.
func (s *relStore) coOwns(name string) bool {
	id, ok := s.names.lookup(name)
	return ok && s.owning[id] > 0
}

// isPolicyOwner reports whether the user called id owns policies.
func (s *relStore) isPolicyOwner(id uint32) bool {
	w := int(id / 64)
	return w < len(s.policyOwners) && s.policyOwners[w]&(1<<(id%64)) != 0
}

// first is the user's first tuple on the object (0: none).
func (s *relStore) first(obj, user uint32) int32 { return s.pairs[pairKey(obj, user)] }

// objFirst is a first tuple on the object (0: none).
func (s *relStore) objFirst(obj uint32) int32 {
	if int(obj) < len(s.objHead) {
		return s.objHead[obj]
	}
	return 0
}

// put adds r (valid) or replaces the tuple with its object, user and relation.
func (s *relStore) put(r *Relationship) { s.putAt(s.internObject(r), r) }

// internObject is r's object id, interning its name.
func (s *relStore) internObject(r *Relationship) uint32 {
	if r.Place != "" {
		return s.names.intern(r.Place)<<1 | 1
	}
	return s.names.intern(r.Thing) << 1
}

// putAt puts r, whose object id is obj.
func (s *relStore) putAt(obj uint32, r *Relationship) {
	user := s.names.intern(r.User)
	code, _ := relCode(r.Relation)
	key := pairKey(obj, user)
	head, tail := s.pairs[key], int32(0)
	for j := head; j != 0; j = s.recs[j].next {
		if s.recs[j].relation == code { // replaced: the new tuple goes last
			s.removeCode(obj, user, code)
			head, tail = s.pairs[key], 0
			break
		}
		tail = j
	}
	if tail == 0 {
		for j := head; j != 0; j = s.recs[j].next {
			tail = j
		}
	}
	i := s.free
	if i != 0 {
		s.free = s.recs[i].next
	} else {
		i = int32(len(s.recs))
		s.recs = append(s.recs, relRec{})
	}
	s.recs[i] = relRec{obj: obj, user: user, relation: code, status: statusCode(r.Status),
		from: s.packTime(r.ValidFrom), until: s.packTime(r.ValidUntil)}
	if code == relOwner || code == relCoOwner {
		s.owning[user]++
	}
	if head == 0 {
		s.pairs[key] = i
	} else {
		s.recs[tail].next = i
	}
	if int(obj) >= len(s.objHead) {
		s.objHead = append(s.objHead, make([]int32, int(obj)+1-len(s.objHead))...)
	}
	if h := s.objHead[obj]; h != 0 {
		s.recs[i].objNext = h
		s.recs[h].objPrev = i
	}
	s.objHead[obj] = i
}

// putAll puts rs in order, but lays the records out object by object: a
// decision walks all tuples on a thing and its places, which at a million
// tuples are otherwise each in a different part of memory. Each object's
// tuples keep their relative order, so a later tuple still replaces an
// earlier one with the same object, user and relation.
func (s *relStore) putAll(rs []Relationship) {
	objs := make([]uint32, len(rs))
	maxObj := uint32(0)
	for i := range rs {
		objs[i] = s.internObject(&rs[i])
		maxObj = max(maxObj, objs[i])
	}
	// A counting sort by object, stable.
	start := make([]int32, int(maxObj)+2)
	for _, o := range objs {
		start[o+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	order := make([]int32, len(rs))
	for i, o := range objs {
		order[start[o]] = int32(i)
		start[o]++
	}
	for _, i := range order {
		s.putAt(objs[i], &rs[i])
	}
}

// remove deletes the tuple of user with relation rel on the thing, or on
// the place when place is set; it reports whether there was one.
func (s *relStore) remove(thing, place, user string, rel Relation) bool {
	obj, ok := s.object(thing, place)
	uid, uok := s.names.lookup(user)
	code, cok := relCode(rel)
	return ok && uok && cok && s.removeCode(obj, uid, code)
}

func (s *relStore) removeCode(obj, user uint32, code uint8) bool {
	key := pairKey(obj, user)
	prev := int32(0)
	for i := s.pairs[key]; i != 0; prev, i = i, s.recs[i].next {
		r := &s.recs[i]
		if r.relation != code {
			continue
		}
		switch {
		case prev != 0:
			s.recs[prev].next = r.next
		case r.next != 0:
			s.pairs[key] = r.next
		default:
			delete(s.pairs, key)
		}
		if r.objPrev != 0 {
			s.recs[r.objPrev].objNext = r.objNext
		} else {
			s.objHead[obj] = r.objNext
		}
		if r.objNext != 0 {
			s.recs[r.objNext].objPrev = r.objPrev
		}
		if code == relOwner || code == relCoOwner {
			if s.owning[user]--; s.owning[user] == 0 {
				delete(s.owning, user)
			}
		}
		*r = relRec{next: s.free}
		s.free = i
		return true
	}
	return false
}

// relationship rebuilds tuple i.
func (s *relStore) relationship(i int32) Relationship {
	r := &s.recs[i]
	out := Relationship{User: s.names.name(r.user), Relation: relations[r.relation], Status: statuses[r.status],
		ValidFrom: s.time(r.from), ValidUntil: s.time(r.until)}
	if r.obj&1 != 0 {
		out.Place = s.names.name(r.obj >> 1)
	} else {
		out.Thing = s.names.name(r.obj >> 1)
	}
	return out
}

// nameTable interns strings as dense ids without heap pointers per name:
// the names lie back to back in one arena, found through an open-addressing
// table of ids. A name's string is a slice of the arena's content, which is
// only ever appended to, so it stays valid (and allocation-free) for good.
// Names are never removed; Load starts a new table.
type nameTable struct {
	arena strings.Builder
	ends  []uint32 // id → end of its name in arena; it starts at the previous id's end
	slots []uint64 // the name's hash's top half <<32 | id+1, or 0 for a free slot; a power of two, at most half full
	seed  maphash.Seed
}

func newNameTable() nameTable { return nameTable{seed: maphash.MakeSeed()} }

func (t *nameTable) name(id uint32) string {
	start := uint32(0)
	if id > 0 {
		start = t.ends[id-1]
	}
	return t.arena.String()[start:t.ends[id]]
}

func (t *nameTable) lookup(s string) (uint32, bool) {
	if len(t.slots) == 0 {
		return 0, false
	}
	mask := uint64(len(t.slots) - 1)
	h := maphash.String(t.seed, s)
	for i := h & mask; ; i = (i + 1) & mask {
		v := t.slots[i]
		if v == 0 {
			return 0, false
		}
		if v>>32 == h>>32 && t.name(uint32(v)-1) == s {
			return uint32(v) - 1, true
		}
	}
}

func (t *nameTable) intern(s string) uint32 {
	if id, ok := t.lookup(s); ok {
		return id
	}
	if 2*(len(t.ends)+1) > len(t.slots) {
		t.rehash(max(2*len(t.slots), 1024))
	}
	id := uint32(len(t.ends))
	t.arena.WriteString(s)
	t.ends = append(t.ends, uint32(t.arena.Len()))
	t.place(id, s)
	return id
}

func (t *nameTable) place(id uint32, s string) {
	mask := uint64(len(t.slots) - 1)
	h := maphash.String(t.seed, s)
	i := h & mask
	for t.slots[i] != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = h>>32<<32 | uint64(id+1)
}

func (t *nameTable) rehash(n int) {
	t.slots = make([]uint64, n)
	for id := range t.ends {
		t.place(uint32(id), t.name(uint32(id)))
	}
}
