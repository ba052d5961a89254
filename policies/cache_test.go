package policies

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCacheNeverStale changes each kind of input after a decision was cached
// and checks the very next decision sees the change.
func TestCacheNeverStale(t *testing.T) {
	doctor := UserPrincipal("doctor")
	const topic = "things/watch-1/data/location"
	allowDoctor := Policy{ID: "doc", Priority: 1, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{topic}, Actions: []Action{ActRead}}
	tests := []struct {
		name   string
		before bool // allowed before the change
		change func(e *Engine, c *fakeClock)
	}{
		{"policy deleted", true, func(e *Engine, _ *fakeClock) { e.DeletePolicy("an", "doc") }},
		{"policy replaced by deny", true, func(e *Engine, _ *fakeClock) {
			p := allowDoctor
			p.Effect = "deny"
			_ = e.PutPolicy("an", p)
		}},
		{"higher-priority deny added", true, func(e *Engine, _ *fakeClock) {
			_ = e.PutPolicy("an", Policy{ID: "stop", Priority: 0, Effect: "deny", Subjects: []string{"*"}, Resources: []string{"#"}, Actions: []Action{ActRead}})
		}},
		{"requester attribute changed", true, func(e *Engine, _ *fakeClock) {
			_ = e.PutUser(User{Name: "doctor", Attributes: Attributes{"role": "retired"}})
		}},
		{"requester deleted", true, func(e *Engine, _ *fakeClock) { e.DeleteUser("doctor") }},
		{"thing changes owner", true, func(e *Engine, _ *fakeClock) { _ = e.PutThing(Thing{ID: "watch-1", Owner: "peter"}) }},
		{"policy added", false, func(e *Engine, _ *fakeClock) {
			_ = e.PutPolicy("an", Policy{ID: "all", Priority: 0, Effect: "allow", Subjects: []string{"user:stranger"}, Resources: []string{"#"}, Actions: []Action{ActRead}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(t0)
			e := household(t, clock)
			_ = e.PutPolicy("an", allowDoctor)
			who := doctor
			if !tc.before {
				who = UserPrincipal("stranger")
			}
			for range 3 { // warm the cache
				if got := decide(e, who, topic, ActRead, "").Allowed(); got != tc.before {
					t.Fatalf("before: allowed = %v", got)
				}
			}
			tc.change(e, clock)
			if got := decide(e, who, topic, ActRead, "").Allowed(); got == tc.before {
				t.Fatalf("after change: still allowed = %v (stale cache)", got)
			}
		})
	}
}

func TestCacheRelationChanges(t *testing.T) {
	clock := newFakeClock(t0)
	e := household(t, clock)
	ruth, peter := UserPrincipal("ruth"), UserPrincipal("peter")
	cmd := "things/lock-1/cmd/unlock"
	if !decide(e, ruth, cmd, ActCommand, "").Allowed() || !decide(e, peter, cmd, ActCommand, "").Allowed() {
		t.Fatal("setup: ruth and peter should be allowed")
	}
	// Revoke the visitor relation on the thing and the co-owner relation on the place.
	_ = e.PutRelationship(Relationship{Thing: "lock-1", User: "ruth", Relation: RelVisitor, Status: StatusRevoked})
	e.DeleteRelationship("", "home-an", "peter", RelCoOwner)
	if d := decide(e, ruth, cmd, ActCommand, ""); d.Allowed() {
		t.Fatalf("revoked visitor still allowed: %s", d.Reason())
	}
	if d := decide(e, peter, cmd, ActCommand, ""); d.Allowed() {
		t.Fatalf("removed co-owner still allowed: %s", d.Reason())
	}
	// Membership changes reach userset subjects.
	_ = e.PutPolicy("an", Policy{ID: "acme", Effect: "allow", Subjects: []string{"org:acme#member"}, Resources: []string{"#"}, Actions: []Action{ActRead}})
	topic := "things/thermo-1/data/temperature"
	if decide(e, UserPrincipal("stranger"), topic, ActRead, "").Allowed() {
		t.Fatal("stranger allowed before joining")
	}
	_ = e.PutMembership(Membership{Group: "org:acme", Relation: "member", Member: "user:stranger"})
	if !decide(e, UserPrincipal("stranger"), topic, ActRead, "").Allowed() {
		t.Fatal("stale deny after joining acme")
	}
	e.DeleteMembership(Membership{Group: "org:acme", Relation: "member", Member: "user:stranger"})
	if decide(e, UserPrincipal("stranger"), topic, ActRead, "").Allowed() {
		t.Fatal("stale allow after leaving acme")
	}
}

func TestCacheWindowBoundary(t *testing.T) {
	clock := newFakeClock(windowUntil.Add(-time.Second))
	e := household(t, clock)
	ruth := UserPrincipal("ruth")
	for range 3 {
		if !decide(e, ruth, "things/lock-1/state", ActRead, "").Allowed() {
			t.Fatal("ruth should read inside her window")
		}
	}
	clock.Add(time.Second + time.Nanosecond)
	if decide(e, ruth, "things/lock-1/state", ActRead, "").Allowed() {
		t.Fatal("cached allow survived the end of the window")
	}
	// env.hour conditions expire at the next hour.
	_ = e.PutPolicy("an", Policy{ID: "evening", Effect: "allow", Subjects: []string{"user:stranger"}, Resources: []string{"#"},
		Actions: []Action{ActRead}, When: &Condition{Attr: "env.hour", Op: OpEq, Value: 22.0}})
	clock.Set(time.Date(2026, 11, 25, 22, 59, 59, 0, time.UTC))
	if !decide(e, UserPrincipal("stranger"), "things/lock-1/state", ActRead, "").Allowed() {
		t.Fatal("evening policy should allow at 22:59")
	}
	clock.Set(time.Date(2026, 11, 25, 23, 0, 0, 0, time.UTC))
	if decide(e, UserPrincipal("stranger"), "things/lock-1/state", ActRead, "").Allowed() {
		t.Fatal("cached allow survived the hour boundary")
	}
}

func TestDynamicDecisionsAreNotCached(t *testing.T) {
	live := &mutableValues{v: 150}
	e := NewEngine(Options{Clock: newFakeClock(t0), Context: live})
	_ = e.PutUser(User{Name: "an"})
	_ = e.PutUser(User{Name: "doctor"})
	_ = e.PutThing(Thing{ID: "watch-1", Owner: "an"})
	_ = e.PutPolicy("an", Policy{ID: "p", Effect: "allow", Subjects: []string{"user:doctor"}, Resources: []string{"#"},
		Actions: []Action{ActRead}, When: &Condition{Attr: "data.watch-1.heart_rate.bpm", Op: OpGt, Value: 140.0}})
	req := Request{Principal: UserPrincipal("doctor"), Topic: "things/watch-1/data/location", Action: ActRead}
	if d := e.Decide(req); !d.Allowed() || !d.Dynamic {
		t.Fatalf("high heart rate: %s dynamic=%v", d.Reason(), d.Dynamic)
	}
	live.set(80)
	if d := e.Decide(req); d.Allowed() {
		t.Fatal("dynamic decision served from cache after the value dropped")
	}
}

type mutableValues struct {
	mu sync.Mutex
	v  float64
}

func (m *mutableValues) set(v float64) { m.mu.Lock(); m.v = v; m.mu.Unlock() }
func (m *mutableValues) Value(_, _, _ string) (any, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.v, true
}

// TestCacheConcurrentChanges races decisions against revocations (run with
// -race): after a revocation returns, no decision may allow.
func TestCacheConcurrentChanges(t *testing.T) {
	e := household(t, newFakeClock(t0))
	p := Policy{ID: "doc", Effect: "allow", Subjects: []string{"role:doctor"}, Resources: []string{"#"}, Actions: []Action{ActRead}}
	req := Request{Principal: UserPrincipal("doctor"), Topic: "things/watch-1/data/location", Action: ActRead}
	for range 200 {
		_ = e.PutPolicy("an", p)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					e.Decide(req)
				}
			})
		}
		e.DeletePolicy("an", "doc")
		if e.DecideShared(&req).Allowed() {
			t.Fatal("allowed right after the policy was deleted")
		}
		wg.Wait()
		if e.DecideShared(&req).Allowed() {
			t.Fatal("allowed after the racing readers finished")
		}
	}
}

func TestMaySubscribe(t *testing.T) {
	clock := newFakeClock(t0)
	e := household(t, clock)
	_ = e.PutPolicy("an", Policy{ID: "doctor-location", Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/watch-1/data/location"}, Actions: []Action{ActRead}, Purposes: []string{"diagnosis"},
		When: &Condition{Attr: "env.hour", Op: OpBetween, Value: []any{8.0, 18.0}}})
	tests := []struct {
		who     Principal
		filter  string
		purpose string
		want    string
	}{
		{UserPrincipal("an"), "things/watch-1/data/#", "", "rule:owner"},
		{UserPrincipal("stranger"), "things/watch-1/data/location", "", "deny:default"},
		{UserPrincipal("stranger"), "things/watch-1/#", "", "deny:default"},
		{UserPrincipal("stranger"), "#", "", "rule:wildcard"},
		{UserPrincipal("stranger"), "+/+/data/#", "", "rule:wildcard"},
		{UserPrincipal("stranger"), "things/+/data/#", "", "rule:wildcard"},
		{UserPrincipal("stranger"), "foo/#", "", "deny:unknown-topic"},
		{UserPrincipal("stranger"), "things/nope/#", "", "deny:unknown-thing"},
		{UserPrincipal("stranger"), "things/a#", "", "deny:invalid-filter"},
		{UserPrincipal("doctor"), "things/watch-1/data/location", "diagnosis", "policy:doctor-location"}, // outside hours: still subscribable
		{UserPrincipal("doctor"), "things/watch-1/data/+", "diagnosis", "policy:doctor-location"},
		{UserPrincipal("doctor"), "things/watch-1/data/heart_rate", "diagnosis", "deny:default"},
		{UserPrincipal("doctor"), "things/watch-1/data/location", "", "deny:default"},
		{UserPrincipal("ruth"), "things/lock-1/state", "", "rule:visitor"},
		{UserPrincipal("peter"), "things/lock-1/#", "", "rule:co_owner"},
		{ThingPrincipal("lock-1"), "things/lock-1/cmd/#", "", "rule:self"},
		{ThingPrincipal("lock-1"), "things/watch-1/data/#", "", "deny:default"},
	}
	for _, tc := range tests {
		t.Run(tc.who.String()+" "+tc.filter, func(t *testing.T) {
			if d := e.MaySubscribe(tc.who, tc.filter, tc.purpose); d.Reason() != tc.want {
				got := d.Reason()
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDerivationWarnings(t *testing.T) {
	e := household(t, newFakeClock(t0))
	share := func(id string, resources ...string) Policy {
		return Policy{ID: id, Effect: "allow", Subjects: []string{"user:stranger"}, Resources: resources, Actions: []Action{ActRead}}
	}
	got := e.Warnings("an", share("power", "things/thermo-1/data/power"))
	if len(got) != 1 || got[0] != "sharing power lets the recipient infer occupancy, which you do not share" {
		t.Fatalf("warnings = %q", got)
	}
	if got := e.Warnings("an", share("loc", "stream:location")); len(got) != 2 {
		t.Fatalf("location warnings = %q", got)
	}
	if got := e.Warnings("an", share("hr", "things/watch-1/data/heart_rate")); len(got) != 1 {
		t.Fatalf("heart rate warnings = %q", got)
	}
	if got := e.Warnings("an", Policy{ID: "d", Effect: "deny", Resources: []string{"#"}}); got != nil {
		t.Fatalf("deny policies warn nothing, got %q", got)
	}
}

// The cache's hash spreads keys that differ in any one field, so that a
// direct-mapped table does not thrash on subscribers of one topic, nor on
// one subscriber's topics.
func TestDecisionCacheHashSpreads(t *testing.T) {
	var g generation
	c := newDecisionCache(1<<16, &g)
	base := Request{Principal: UserPrincipal("guest-1"), Topic: "things/t-1-1/data/location", Action: ActRead, Purpose: "care"}
	variants := map[string]func(i int) Request{
		"principal": func(i int) Request { r := base; r.Principal.ID = fmt.Sprintf("guest-%d", i); return r },
		"topic": func(i int) Request {
			r := base
			r.Topic = fmt.Sprintf("things/t-%d-%d/data/location", i/10, i%10)
			return r
		},
		"purpose": func(i int) Request { r := base; r.Purpose = fmt.Sprintf("p%d", i); return r },
		"short":   func(i int) Request { r := base; r.Principal.ID = fmt.Sprintf("u%d", i); return r },
		"long id": func(i int) Request {
			r := base
			r.Principal.ID = fmt.Sprintf("a-much-longer-user-name-%d", i)
			return r
		},
		"long purp": func(i int) Request { r := base; r.Purpose = fmt.Sprintf("purpose-%d", i); return r },
		"long": func(i int) Request {
			r := base
			r.Topic = fmt.Sprintf("things/a-very-long-thing-name-%08d/data/s", i)
			return r
		},
	}
	for name, mk := range variants {
		slots := map[*atomic.Pointer[cacheEntry]]bool{}
		const n = 4096
		for i := range n {
			r := mk(i)
			slots[c.slot(&r)] = true
		}
		// n keys into 65,536 slots: about n(1-n/2/65536) ≈ 3,970 distinct slots expected.
		if len(slots) < n*9/10 {
			t.Errorf("%s: %d keys in %d slots", name, n, len(slots))
		}
	}
	kinds := map[*atomic.Pointer[cacheEntry]]bool{}
	for _, r := range []Request{base, {Principal: ThingPrincipal("guest-1"), Topic: base.Topic, Action: ActRead, Purpose: "care"},
		{Principal: base.Principal, Topic: base.Topic, Action: ActHistory, Purpose: "care"}} {
		kinds[c.slot(&r)] = true
	}
	if len(kinds) != 3 {
		t.Errorf("principal kind and action share slots: %d of 3", len(kinds))
	}
}

// Requests that differ only in one field are distinct cache entries.
func TestDecisionCacheKeyFields(t *testing.T) {
	var g generation
	c := newDecisionCache(1<<10, &g)
	clock := newFakeClock(t0)
	base := Request{Principal: UserPrincipal("a"), Topic: "things/x/state", Action: ActRead, Purpose: "care"}
	c.put(&base, Decision{Effect: Allow, Rule: "owner"}, 0, nil)
	for _, r := range []Request{
		{Principal: ThingPrincipal("a"), Topic: base.Topic, Action: base.Action, Purpose: base.Purpose},
		{Principal: UserPrincipal("b"), Topic: base.Topic, Action: base.Action, Purpose: base.Purpose},
		{Principal: base.Principal, Topic: "things/y/state", Action: base.Action, Purpose: base.Purpose},
		{Principal: base.Principal, Topic: base.Topic, Action: ActCommand, Purpose: base.Purpose},
		{Principal: base.Principal, Topic: base.Topic, Action: base.Action},
	} {
		if e := c.get(&r, clock); e != nil {
			t.Errorf("%+v served %+v's entry", r, base)
		}
	}
	if e := c.get(&base, clock); e == nil || e.d.Rule != "owner" {
		t.Errorf("entry lost: %+v", e)
	}
}

// A co-owner's policy change reaches decisions on the things it co-owns,
// though they never depended on its policies: it had none, or a
// higher-priority policy decided first.
func TestCacheCoOwnerPolicyChange(t *testing.T) {
	e := household(t, newFakeClock(t0))
	req := Request{Principal: UserPrincipal("stranger"), Topic: "things/thermo-1/state", Action: ActRead}
	allow := func(id string, prio int) Policy {
		return Policy{ID: id, Priority: prio, Effect: "allow", Subjects: []string{"user:stranger"}, Resources: []string{"things/thermo-1/state"}, Actions: []Action{ActRead}}
	}
	check := func(step, want string) {
		t.Helper()
		e.Decide(req) // cached, if it can be
		d, u := e.Decide(req), e.DecideUncached(req)
		if got, unc := d.Reason(), u.Reason(); got != want || unc != want {
			t.Fatalf("%s: cached %s, uncached %s, want %s", step, got, unc, want)
		}
	}
	check("before", "deny:default")
	if err := e.PutPolicy("peter", allow("p", 5)); err != nil { // peter co-owns home-an, without policies so far
		t.Fatal(err)
	}
	check("peter's first policy", "policy:p")
	if err := e.PutPolicy("an", allow("a", 9)); err != nil {
		t.Fatal(err)
	}
	check("an's lower-priority policy", "policy:p")
	if err := e.PutPolicy("peter", allow("q", 1)); err != nil {
		t.Fatal(err)
	}
	check("peter's higher-priority policy", "policy:q")
	e.DeletePolicy("peter", "q")
	e.DeletePolicy("peter", "p")
	check("peter's deleted", "policy:a")
	e.DeleteRelationship("", "home-an", "peter", RelCoOwner)
	if e.rels.coOwns("peter") {
		t.Error("peter still counted as a co-owner")
	}
}

// DecideShared hands out the cache's own decision: it must be Decide's
// answer, shared while it holds, and left alone by a change, which makes
// the next call answer anew.
func TestDecideShared(t *testing.T) {
	e := household(t, newFakeClock(t0))
	_ = e.PutPolicy("an", Policy{ID: "doc", Priority: 1, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/watch-1/data/location"}, Actions: []Action{ActRead},
		Constraints: []Constraint{{Kind: "accuracy", Field: "lat", Step: 0.01}}})
	reqs := []Request{
		{Principal: UserPrincipal("doctor"), Topic: "things/watch-1/data/location", Action: ActRead},
		{Principal: UserPrincipal("an"), Topic: "things/lock-1/state", Action: ActRead},
		{Principal: UserPrincipal("stranger"), Topic: "things/watch-1/data/location", Action: ActRead},
		{Principal: UserPrincipal("doctor"), Topic: "things/no-such-thing/data/x", Action: ActRead}, // not cached
	}
	for _, req := range reqs {
		want := e.Decide(req)
		got := e.DecideShared(&req)
		if *got != want {
			t.Fatalf("%+v: DecideShared %+v, Decide %+v", req, *got, want)
		}
		if again := e.DecideShared(&req); *again != want {
			t.Fatalf("%+v: second DecideShared %+v", req, *again)
		}
	}
	doctor := &reqs[0]
	first := e.DecideShared(doctor)
	if again := e.DecideShared(doctor); again != first {
		t.Fatal("a cached decision was not shared")
	}
	kept := *first
	_ = e.PutPolicy("an", Policy{ID: "doc", Priority: 1, Effect: "deny", Subjects: []string{"role:doctor"},
		Resources: []string{"things/watch-1/data/location"}, Actions: []Action{ActRead}})
	if after := e.DecideShared(doctor); after.Allowed() || after == first {
		t.Fatalf("after the change: %+v (shared: %v)", *after, after == first)
	}
	if *first != kept {
		t.Fatalf("a change modified a shared decision: %+v, was %+v", *first, kept)
	}
}

// A generation is found again by its key, never moves as the table grows
// (cached decisions point at it), and a user and a thing of one name have
// one each.
func TestGenTable(t *testing.T) {
	e := NewEngine(Options{Clock: newFakeClock(t0)})
	first := e.subjects.get(e.subjectKey(UserPrincipal("ruth")))
	first.bump()
	for i := range 3 * genBlock {
		e.subjects.get(e.subjectKey(UserPrincipal(fmt.Sprint("user-", i))))
	}
	again := e.subjects.get(e.subjectKey(UserPrincipal("ruth")))
	if again != first || again.n.Load() != 1 {
		t.Fatalf("ruth's generation moved or changed: %p %p, %d", first, again, again.n.Load())
	}
	if e.subjects.find(e.subjectKey(ThingPrincipal("ruth"))) != nil {
		t.Fatal("the thing ruth has the user ruth's generation")
	}
	if g := e.subjects.get(e.subjectKey(ThingPrincipal("ruth"))); g == first || len(e.subjects.ids) != 3*genBlock+2 {
		t.Fatalf("%d generations for %d keys", len(e.subjects.ids), 3*genBlock+2)
	}
	if e.owners.find(e.ownerKey("nobody")) != nil {
		t.Fatal("a generation for an owner never seen")
	}
}
