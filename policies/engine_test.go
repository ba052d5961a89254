package policies

import (
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // env.* tests load a zone on machines without zoneinfo
)

// fakeClock is a settable clock for window and env.* tests.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.Set(t)
	return c
}
func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

var (
	t0          = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	windowFrom  = time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	windowUntil = time.Date(2026, 11, 25, 23, 0, 0, 0, time.UTC)
)

// household builds the smartlock story: an owns lock-1 and watch-1 in her
// home; patrick installed lock-2 (not yet handed over); peter co-owns the
// home; ruth visits lock-1 tonight; a doctor and a stranger.
func household(t testing.TB, clock Clock) *Engine {
	t.Helper()
	e := NewEngine(Options{Clock: clock, Secret: []byte("test-secret")})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []User{
		{Name: "an"}, {Name: "patrick", Attributes: Attributes{"certified_installer": true}},
		{Name: "peter"}, {Name: "ruth"}, {Name: "stranger"},
		{Name: "doctor", Attributes: Attributes{"role": "doctor", "level": 3}},
		{Name: "nurse", Attributes: Attributes{"role": "nurse", "level": 1}},
	} {
		must(e.PutUser(u))
	}
	must(e.PutPlace(Place{ID: "home-an", Owner: "an"}))
	must(e.PutPlace(Place{ID: "hall", Owner: "an", Parent: "home-an"}))
	for _, th := range []Thing{
		{ID: "lock-1", Owner: "an", Kind: "actuator", Place: "hall"},
		{ID: "watch-1", Owner: "an", Kind: "sensor", Streams: []string{"location", "heart_rate"}},
		{ID: "thermo-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature", "power"}, Place: "home-an"},
		{ID: "lock-2", Kind: "actuator"},
	} {
		must(e.PutThing(th))
	}
	for _, r := range []Relationship{
		{Place: "home-an", User: "peter", Relation: RelCoOwner, Status: StatusActive},
		{Thing: "lock-1", User: "ruth", Relation: RelVisitor, Status: StatusActive, ValidFrom: windowFrom, ValidUntil: windowUntil},
		{Thing: "lock-2", User: "patrick", Relation: RelInstaller, Status: StatusActive},
		{Thing: "lock-2", User: "an", Relation: RelOwner, Status: StatusPending},
	} {
		must(e.PutRelationship(r))
	}
	return e
}

func decide(e *Engine, who Principal, topic string, act Action, purpose string) *Decision {
	d := e.Decide(Request{Principal: who, Topic: topic, Action: act, Purpose: purpose})
	return &d
}

func TestBuiltinRules(t *testing.T) {
	clock := newFakeClock(t0)
	e := household(t, clock)
	u := UserPrincipal
	tests := []struct {
		name  string
		who   Principal
		topic string
		act   Action
		want  string // Reason()
	}{
		{"owner reads data", u("an"), "things/watch-1/data/location", ActRead, "rule:owner"},
		{"owner commands", u("an"), "things/lock-1/cmd/unlock", ActCommand, "rule:owner"},
		{"owner configures", u("an"), "things/lock-1", ActConfigure, "rule:owner"},
		{"co-owner via place chain", u("peter"), "things/lock-1/cmd/unlock", ActCommand, "rule:co_owner"},
		{"co-owner via place reads data", u("peter"), "things/thermo-1/data/temperature", ActRead, "rule:co_owner"},
		{"co-owner not on things outside the place", u("peter"), "things/watch-1/data/location", ActRead, "deny:default"},
		{"visitor commands in window", u("ruth"), "things/lock-1/cmd/unlock", ActCommand, "rule:visitor"},
		{"visitor reads state in window", u("ruth"), "things/lock-1/state", ActRead, "rule:visitor"},
		{"visitor may not configure", u("ruth"), "things/lock-1", ActConfigure, "deny:default"},
		{"visitor sees no data", u("ruth"), "things/thermo-1/data/temperature", ActRead, "deny:default"},
		{"installer commands before hand-over", u("patrick"), "things/lock-2/cmd/unlock", ActCommand, "rule:installer"},
		{"installer reads state before hand-over", u("patrick"), "things/lock-2/state", ActRead, "rule:installer"},
		{"installer configures before hand-over", u("patrick"), "things/lock-2", ActConfigure, "rule:installer"},
		{"installer reads no data", u("patrick"), "things/lock-2/data/battery", ActRead, "deny:default"},
		{"pending invitation grants nothing", u("an"), "things/lock-2/cmd/unlock", ActCommand, "deny:default"},
		{"stranger nothing", u("stranger"), "things/lock-1/state", ActRead, "deny:default"},
		{"thing publishes own data", ThingPrincipal("watch-1"), "things/watch-1/data/location", ActPublish, "rule:self"},
		{"thing publishes only declared streams", ThingPrincipal("watch-1"), "things/watch-1/data/secret", ActPublish, "deny:default"},
		{"thing publishes own state", ThingPrincipal("lock-1"), "things/lock-1/state", ActPublish, "rule:self"},
		{"thing receives own commands", ThingPrincipal("lock-1"), "things/lock-1/cmd/unlock", ActRead, "rule:self"},
		{"thing may not publish for another", ThingPrincipal("watch-1"), "things/thermo-1/data/temperature", ActPublish, "deny:default"},
		{"unknown thing", u("an"), "things/nope/state", ActRead, "deny:unknown-thing"},
		{"unknown user", u("mallory"), "things/lock-1/state", ActRead, "deny:unknown-principal"},
		{"topic outside the namespace", u("an"), "foo/bar", ActRead, "deny:unknown-topic"},
		{"malformed data topic", u("an"), "things/watch-1/data/a/b", ActRead, "deny:unknown-topic"},
		{"unknown action", u("an"), "things/watch-1/data/location", Action("write"), "deny:unknown-topic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(e, tc.who, tc.topic, tc.act, "").Reason(); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestHandOverEndsInstallerAccess(t *testing.T) {
	clock := newFakeClock(t0)
	e := household(t, clock)
	patrick := UserPrincipal("patrick")
	if d := decide(e, patrick, "things/lock-2/cmd/unlock", ActCommand, ""); !d.Allowed() {
		t.Fatalf("before hand-over: %s", d.Reason())
	}
	// An accepts the invitation: the owner relation becomes active.
	if err := e.PutRelationship(Relationship{Thing: "lock-2", User: "an", Relation: RelOwner, Status: StatusActive}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		topic string
		act   Action
	}{{"things/lock-2/cmd/unlock", ActCommand}, {"things/lock-2/state", ActRead}, {"things/lock-2", ActConfigure}} {
		if d := decide(e, patrick, c.topic, c.act, ""); d.Allowed() {
			t.Fatalf("after hand-over %s %s still allowed: %s", c.act, c.topic, d.Reason())
		}
	}
	if d := decide(e, UserPrincipal("an"), "things/lock-2/cmd/unlock", ActCommand, ""); d.Reason() != "rule:owner" {
		t.Fatalf("an after accepting: %s", d.Reason())
	}
}

func TestVisitorWindowBoundaries(t *testing.T) {
	clock := newFakeClock(windowFrom.Add(-time.Nanosecond))
	e := household(t, clock)
	ruth := UserPrincipal("ruth")
	cmd := func() *Decision { return decide(e, ruth, "things/lock-1/cmd/unlock", ActCommand, "") }
	if d := cmd(); d.Allowed() {
		t.Fatal("allowed 1ns before valid_from")
	} else if !d.Expires.Equal(windowFrom) {
		t.Fatalf("denial should expire at valid_from, expires %v", d.Expires)
	}
	clock.Set(windowFrom)
	if d := cmd(); !d.Allowed() {
		t.Fatalf("denied at valid_from: %s", d.Reason())
	} else if !d.Expires.Equal(windowUntil.Add(time.Nanosecond)) {
		t.Fatalf("allow should expire 1ns after valid_until, expires %v", d.Expires)
	}
	clock.Set(windowUntil)
	if d := cmd(); !d.Allowed() {
		t.Fatal("denied at valid_until")
	}
	clock.Set(windowUntil.Add(time.Nanosecond))
	if d := cmd(); d.Allowed() {
		t.Fatal("allowed 1ns after valid_until")
	}
}

func TestPolicyEvaluation(t *testing.T) {
	clock := newFakeClock(t0) // 20:00 UTC, a Wednesday
	e := household(t, clock)
	must := func(owner string, p Policy) {
		t.Helper()
		if err := e.PutPolicy(owner, p); err != nil {
			t.Fatal(err)
		}
	}
	must("an", Policy{ID: "doctor-location", Priority: 10, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/watch-1/data/location"}, Actions: []Action{ActRead, ActHistory}, Purposes: []string{"diagnosis"}})
	must("an", Policy{ID: "no-nights", Priority: 5, Effect: "deny", Subjects: []string{"*"},
		Resources: []string{"things/watch-1/data/heart_rate"}, Actions: []Action{ActRead},
		When: &Condition{Attr: "env.hour", Op: OpGe, Value: 22.0}})
	must("an", Policy{ID: "heart-rate", Priority: 20, Effect: "allow", Subjects: []string{"role:doctor", "user:ruth"},
		Resources: []string{"stream:heart_rate"}, Actions: []Action{ActRead}})
	must("an", Policy{ID: "acme", Priority: 30, Effect: "allow", Subjects: []string{"org:acme#member"},
		Resources: []string{"things/thermo-1/data/#"}, Actions: []Action{ActRead}})
	must("an", Policy{ID: "visitors-temp", Priority: 40, Effect: "allow", Subjects: []string{"relation:visitor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []Action{ActRead}})
	must("peter", Policy{ID: "peter-shares", Priority: 1, Effect: "allow", Subjects: []string{"user:stranger"},
		Resources: []string{"things/thermo-1/data/power"}, Actions: []Action{ActRead}})
	if err := e.PutMembership(Membership{Group: "team:night", Relation: "member", Member: "user:nurse"}); err != nil {
		t.Fatal(err)
	}
	if err := e.PutMembership(Membership{Group: "org:acme", Relation: "member", Member: "team:night#member"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		who     string
		topic   string
		act     Action
		purpose string
		want    string
	}{
		{"purpose matches", "doctor", "things/watch-1/data/location", ActRead, "diagnosis", "policy:doctor-location"},
		{"history action", "doctor", "things/watch-1/data/location", ActHistory, "diagnosis", "policy:doctor-location"},
		{"no purpose declared", "doctor", "things/watch-1/data/location", ActRead, "", "deny:default"},
		{"other purpose", "doctor", "things/watch-1/data/location", ActRead, "marketing", "deny:default"},
		{"action not listed", "doctor", "things/watch-1/data/location", ActCommand, "diagnosis", "deny:default"},
		{"subject not listed", "nurse", "things/watch-1/data/location", ActRead, "diagnosis", "deny:default"},
		{"stream resource, user subject", "ruth", "things/watch-1/data/heart_rate", ActRead, "", "policy:heart-rate"},
		{"userset resolved transitively", "nurse", "things/thermo-1/data/temperature", ActRead, "", "policy:acme"},
		{"userset non-member", "stranger", "things/thermo-1/data/temperature", ActRead, "", "deny:default"},
		{"relation subject", "ruth", "things/lock-1/data/temperature", ActRead, "", "policy:visitors-temp"},
		{"co-owner's policy applies", "stranger", "things/thermo-1/data/power", ActRead, "", "policy:peter-shares"},
		{"co-owner's policy not on other things", "stranger", "things/watch-1/data/power", ActRead, "", "deny:default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(e, UserPrincipal(tc.who), tc.topic, tc.act, tc.purpose).Reason(); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}

	// Deny with a higher priority (lower number) overrides the allow at night.
	clock.Set(time.Date(2026, 11, 25, 22, 30, 0, 0, time.UTC))
	if got := decide(e, UserPrincipal("ruth"), "things/watch-1/data/heart_rate", ActRead, "").Reason(); got != "policy:no-nights" {
		t.Fatalf("at 22:30 got %s, want policy:no-nights", got)
	}
	clock.Set(time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC))
	if got := decide(e, UserPrincipal("ruth"), "things/watch-1/data/heart_rate", ActRead, "").Reason(); got != "policy:heart-rate" {
		t.Fatalf("at midnight got %s, want policy:heart-rate", got)
	}
}

func TestPriorityTiesBreakByID(t *testing.T) {
	e := household(t, newFakeClock(t0))
	for _, p := range []Policy{
		{ID: "b-allow", Priority: 1, Effect: "allow", Subjects: []string{"*"}, Resources: []string{"#"}, Actions: []Action{ActRead}},
		{ID: "a-deny", Priority: 1, Effect: "deny", Subjects: []string{"*"}, Resources: []string{"#"}, Actions: []Action{ActRead}},
		{ID: "c-allow", Priority: 0, Effect: "allow", Subjects: []string{"user:doctor"}, Resources: []string{"#"}, Actions: []Action{ActRead}},
	} {
		if err := e.PutPolicy("an", p); err != nil {
			t.Fatal(err)
		}
	}
	if got := decide(e, UserPrincipal("stranger"), "things/thermo-1/data/temperature", ActRead, "").Reason(); got != "policy:a-deny" {
		t.Fatalf("got %s, want policy:a-deny", got)
	}
	if got := decide(e, UserPrincipal("doctor"), "things/thermo-1/data/temperature", ActRead, "").Reason(); got != "policy:c-allow" {
		t.Fatalf("got %s, want policy:c-allow", got)
	}
}

type liveValues map[string]any

func (l liveValues) Value(thing, stream, field string) (any, bool) {
	v, ok := l[thing+"."+stream+"."+field]
	return v, ok
}

func TestConditionOperators(t *testing.T) {
	clock := newFakeClock(t0) // Wednesday 20:00 UTC
	live := liveValues{"watch-1.heart_rate.bpm": 150, "thermo-1.temperature.celsius": 21.5}
	e := NewEngine(Options{Clock: clock, Context: live})
	_ = e.PutUser(User{Name: "an"})
	_ = e.PutUser(User{Name: "doctor", Attributes: Attributes{"role": "doctor", "level": 3, "org": "acme-clinic", "home": "an", "on_call": true}})
	_ = e.PutThing(Thing{ID: "watch-1", Owner: "an", Attributes: Attributes{"room": "bedroom", "max_level": 2}})
	c := func(attr string, op Op, v any) *Condition { return &Condition{Attr: attr, Op: op, Value: v} }
	ref := func(attr string, op Op, r string) *Condition { return &Condition{Attr: attr, Op: op, Ref: r} }
	tests := []struct {
		name    string
		when    *Condition
		want    bool
		dynamic bool
		expires time.Time
	}{
		{"eq string", c("requester.role", OpEq, "doctor"), true, false, time.Time{}},
		{"eq mismatch", c("requester.role", OpEq, "nurse"), false, false, time.Time{}},
		{"eq bool", c("requester.on_call", OpEq, true), true, false, time.Time{}},
		{"eq number vs string", c("requester.level", OpEq, "3"), false, false, time.Time{}},
		{"ne", c("requester.role", OpNe, "nurse"), true, false, time.Time{}},
		{"ne on missing attribute is false", c("requester.missing", OpNe, "x"), false, false, time.Time{}},
		{"lt", c("requester.level", OpLt, 4), true, false, time.Time{}},
		{"lt equal", c("requester.level", OpLt, 3), false, false, time.Time{}},
		{"le", c("requester.level", OpLe, 3), true, false, time.Time{}},
		{"gt", c("requester.level", OpGt, 2), true, false, time.Time{}},
		{"ge", c("requester.level", OpGe, 4), false, false, time.Time{}},
		{"gt string", c("requester.role", OpGt, "a"), true, false, time.Time{}},
		{"in", c("requester.role", OpIn, []any{"nurse", "doctor"}), true, false, time.Time{}},
		{"in miss", c("requester.role", OpIn, []any{"nurse"}), false, false, time.Time{}},
		{"between", c("requester.level", OpBetween, []any{1, 3}), true, false, time.Time{}},
		{"between outside", c("requester.level", OpBetween, []any{4, 5}), false, false, time.Time{}},
		{"prefix", c("requester.org", OpPrefix, "acme"), true, false, time.Time{}},
		{"contains", c("requester.org", OpContains, "clinic"), true, false, time.Time{}},
		{"contains miss", c("requester.org", OpContains, "hospital"), false, false, time.Time{}},
		{"thing attribute", c("thing.room", OpEq, "bedroom"), true, false, time.Time{}},
		{"thing owner", c("thing.owner", OpEq, "an"), true, false, time.Time{}},
		{"ref right side", ref("requester.home", OpEq, "thing.owner"), true, false, time.Time{}},
		{"ref numeric", ref("requester.level", OpGt, "thing.max_level"), true, false, time.Time{}},
		{"ref missing", ref("requester.level", OpGt, "thing.nope"), false, false, time.Time{}},
		{"live data", c("data.watch-1.heart_rate.bpm", OpGt, 140), true, true, time.Time{}},
		{"live data missing", c("data.watch-1.heart_rate.spo2", OpGt, 90), false, true, time.Time{}},
		{"env hour", c("env.hour", OpBetween, []any{18, 21}), true, false, t0.Add(time.Hour)},
		{"env weekday", c("env.weekday", OpEq, "wednesday"), true, false, time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)},
		{"env time", c("env.time", OpGe, "19:30"), true, false, t0.Add(time.Minute)},
		{"purpose", c("request.purpose", OpEq, "diagnosis"), true, false, time.Time{}},
		{"action", c("request.action", OpEq, "read"), true, false, time.Time{}},
		{"all", &Condition{All: []Condition{*c("requester.role", OpEq, "doctor"), *c("requester.level", OpGe, 3)}}, true, false, time.Time{}},
		{"all one false", &Condition{All: []Condition{*c("requester.role", OpEq, "doctor"), *c("requester.level", OpGe, 4)}}, false, false, time.Time{}},
		{"any", &Condition{Any: []Condition{*c("requester.role", OpEq, "nurse"), *c("requester.level", OpGe, 3)}}, true, false, time.Time{}},
		{"any none", &Condition{Any: []Condition{*c("requester.role", OpEq, "nurse"), *c("requester.level", OpGe, 4)}}, false, false, time.Time{}},
		{"not", &Condition{Not: c("requester.role", OpEq, "nurse")}, true, false, time.Time{}},
		{"not of true", &Condition{Not: c("requester.role", OpEq, "doctor")}, false, false, time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Policy{ID: "p", Effect: "allow", Subjects: []string{"*"}, Resources: []string{"things/watch-1/data/#"},
				Actions: []Action{ActRead}, When: tc.when}
			if err := e.PutPolicy("an", p); err != nil {
				t.Fatal(err)
			}
			d := decide(e, UserPrincipal("doctor"), "things/watch-1/data/heart_rate", ActRead, "diagnosis")
			if d.Allowed() != tc.want {
				t.Fatalf("allowed = %v, want %v (%s)", d.Allowed(), tc.want, d.Reason())
			}
			if d.Dynamic != tc.dynamic {
				t.Fatalf("dynamic = %v, want %v", d.Dynamic, tc.dynamic)
			}
			if !d.Expires.Equal(tc.expires) {
				t.Fatalf("expires = %v, want %v", d.Expires, tc.expires)
			}
		})
	}
}

func TestEnvUsesConfiguredTimeZone(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock(t0) // 20:00 UTC = 21:00 in Berlin
	e := envEngine(clock, berlin, &Condition{Attr: "env.hour", Op: OpEq, Value: 21.0})
	if d := decide(e, UserPrincipal("x"), "things/w/state", ActRead, ""); !d.Allowed() {
		t.Fatalf("env.hour should be 21 in Berlin: %s", d.Reason())
	}
}

// envEngine is an engine in loc where anyone may read an's thing w when
// the condition holds.
func envEngine(clock Clock, loc *time.Location, when *Condition) *Engine {
	e := NewEngine(Options{Clock: clock, Location: loc})
	_ = e.PutUser(User{Name: "an"})
	_ = e.PutUser(User{Name: "x"})
	_ = e.PutThing(Thing{ID: "w", Owner: "an"})
	_ = e.PutPolicy("an", Policy{ID: "p", Effect: "allow", Subjects: []string{"*"}, Resources: []string{"#"},
		Actions: []Action{ActRead}, When: when})
	return e
}

// Relationships come back as they were put (zones included), a put replaces
// the tuple with the same object, user and relation, a delete removes only
// its tuple, and a thing and a place of the same name stay apart.
func TestRelationshipStore(t *testing.T) {
	e := NewEngine(Options{Clock: newFakeClock(t0)})
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 11, 25, 18, 30, 0, 123, berlin)
	until := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	put := func(r Relationship) {
		t.Helper()
		if err := e.PutRelationship(r); err != nil {
			t.Fatal(err)
		}
	}
	put(Relationship{Thing: "x", User: "ruth", Relation: RelVisitor, Status: StatusPending, ValidFrom: from, ValidUntil: until})
	put(Relationship{Thing: "x", User: "ruth", Relation: RelInstaller, Status: StatusActive})
	put(Relationship{Thing: "x", User: "peter", Relation: RelCoOwner, Status: StatusRevoked, ValidUntil: until.In(time.Local)})
	put(Relationship{Place: "x", User: "an", Relation: RelOwner, Status: StatusActive})
	put(Relationship{Thing: "x", User: "ruth", Relation: RelVisitor, Status: StatusActive, ValidFrom: from}) // replaces the pending one

	got := e.Relationships("x", "")
	want := []Relationship{
		{Thing: "x", User: "peter", Relation: RelCoOwner, Status: StatusRevoked, ValidUntil: until.In(time.Local)},
		{Thing: "x", User: "ruth", Relation: RelInstaller, Status: StatusActive},
		{Thing: "x", User: "ruth", Relation: RelVisitor, Status: StatusActive, ValidFrom: from},
	}
	if len(got) != len(want) {
		t.Fatalf("thing x: %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("thing x [%d]: %+v, want %+v", i, got[i], want[i])
		}
	}
	if got := e.Relationships("", "x"); len(got) != 1 || got[0] != (Relationship{Place: "x", User: "an", Relation: RelOwner, Status: StatusActive}) {
		t.Errorf("place x: %+v", got)
	}
	if got := e.Relationships("y", ""); got != nil {
		t.Errorf("unknown thing: %+v", got)
	}

	e.DeleteRelationship("x", "", "ruth", RelVisitor)
	e.DeleteRelationship("x", "", "an", RelOwner) // on the place, not the thing: nothing
	e.DeleteRelationship("x", "", "nobody", RelOwner)
	if got := e.Relationships("x", ""); len(got) != 2 || got[1].Relation != RelInstaller {
		t.Errorf("after the delete: %+v", got)
	}
	// The freed record is reused, and the lists stay consistent.
	put(Relationship{Thing: "z", User: "ruth", Relation: RelVisitor, Status: StatusActive})
	e.DeleteRelationship("x", "", "peter", RelCoOwner)
	e.DeleteRelationship("x", "", "ruth", RelInstaller)
	if got := e.Relationships("x", ""); len(got) != 0 {
		t.Errorf("thing x emptied: %+v", got)
	}
	if got := e.Relationships("z", ""); len(got) != 1 || got[0].User != "ruth" {
		t.Errorf("thing z: %+v", got)
	}
	if got := e.Relationships("", "x"); len(got) != 1 {
		t.Errorf("place x: %+v", got)
	}
}

// A subscription names the relation the user's earliest active tuple on the
// thing grants, as before the store held tuples as records.
func TestMaySubscribeRelationOrder(t *testing.T) {
	e := household(t, newFakeClock(t0))
	for _, r := range []Relationship{
		{Thing: "watch-1", User: "ruth", Relation: RelInstaller, Status: StatusPending},
		{Thing: "watch-1", User: "ruth", Relation: RelVisitor, Status: StatusActive},
		{Thing: "watch-1", User: "ruth", Relation: RelCoOwner, Status: StatusActive},
	} {
		if err := e.PutRelationship(r); err != nil {
			t.Fatal(err)
		}
	}
	if d := e.MaySubscribe(UserPrincipal("ruth"), "things/watch-1/state", ""); d.Rule != "visitor" {
		t.Fatalf("%+v", d)
	}
	e.DeleteRelationship("watch-1", "", "ruth", RelVisitor)
	if d := e.MaySubscribe(UserPrincipal("ruth"), "things/watch-1/state", ""); d.Rule != "co_owner" {
		t.Fatalf("%+v", d)
	}
}

// Load keeps its own packed copy of the snapshot: items and policies read
// back equal to what was loaded, equal conditions are shared but differing
// ones are not, and a list handed out has no room to grow into another's.
func TestLoadPacksSnapshot(t *testing.T) {
	cond := func(v any) *Condition { return &Condition{Attr: "requester.level", Op: OpGe, Value: v} }
	snap := Snapshot{
		Users:  []User{{Name: "an"}, {Name: "ruth", Attributes: Attributes{"level": 2.0}}, {Name: "bo", Attributes: Attributes{"level": "2"}}},
		Places: []Place{{ID: "home", Owner: "an"}},
		Things: []Thing{{ID: "t1", Owner: "an", Kind: "sensor", Streams: []string{"temperature", "location"}, Place: "home"}},
		Policies: []OwnedPolicy{
			{Owner: "an", Policy: Policy{ID: "a", Priority: 1, Effect: "allow", Subjects: []string{"user:ruth", "user:bo"},
				Resources: []string{"things/t1/data/#"}, Actions: []Action{ActRead}, Purposes: []string{"care"}, When: cond(2.0)}},
			{Owner: "an", Policy: Policy{ID: "b", Priority: 2, Effect: "allow", Subjects: []string{"user:ruth", "user:bo"},
				Resources: []string{"things/t1/data/#"}, Actions: []Action{ActRead}, Purposes: []string{"care"}, When: cond("2")}},
			{Owner: "an", Policy: Policy{ID: "c", Priority: 3, Effect: "allow", Subjects: []string{"user:ruth"},
				Resources: []string{"things/t1/data/#"}, Actions: []Action{ActRead}, When: &Condition{All: []Condition{}}}},
			{Owner: "an", Policy: Policy{ID: "d", Priority: 4, Effect: "allow", Subjects: []string{}, Resources: []string{"stream:x"},
				Actions: []Action{ActRead}, When: cond(2.0)}},
		},
	}
	e := NewEngine(Options{Clock: newFakeClock(t0)})
	if err := e.Load(snap); err != nil {
		t.Fatal(err)
	}
	got := e.Policies("an")
	for i, want := range []Policy{snap.Policies[0].Policy, snap.Policies[1].Policy, snap.Policies[2].Policy, snap.Policies[3].Policy} {
		if !reflect.DeepEqual(got[i], want) {
			t.Errorf("policy %s: %+v, want %+v", want.ID, got[i], want)
		}
	}
	kept := e.policies["an"]
	if kept[0].srcWhen != kept[3].srcWhen || kept[0].when != kept[3].when || kept[0].when == kept[1].when {
		t.Error("equal conditions not shared, or differing ones shared")
	}
	// What Policies hands out is the caller's: nothing it changes reaches
	// the engine or another policy.
	got[0].Subjects = append(got[0].Subjects, "user:x")
	got[0].Purposes[0], got[0].When.Value, got[3].When.Attr = "ads", 3.0, "requester.age"
	again := e.Policies("an")
	if !reflect.DeepEqual(again[1].Subjects, []string{"user:ruth", "user:bo"}) {
		t.Errorf("an append ran into the next policy: %v", again[1].Subjects)
	}
	if again[0].Purposes[0] != "care" || again[0].When.Value != 2.0 || again[3].When.Attr != "requester.level" {
		t.Errorf("a change to a copy reached the engine: %+v, %+v", again[0], again[3].When)
	}
	if d := decide(e, UserPrincipal("ruth"), "things/t1/data/temperature", ActRead, "care"); d.PolicyID != "a" {
		t.Errorf("after changes to copies, ruth: %s, want policy a", d.Reason())
	}
	if th, _ := e.Thing("t1"); !reflect.DeepEqual(th, snap.Things[0]) {
		t.Errorf("thing: %+v", th)
	}
	if u, _ := e.User("ruth"); !reflect.DeepEqual(u, snap.Users[1]) {
		t.Errorf("user: %+v", u)
	}
	if p, _ := e.Place("home"); !reflect.DeepEqual(p, snap.Places[0]) {
		t.Errorf("place: %+v", p)
	}
	// ruth's level is the number 2, bo's the string "2": each matches
	// only the condition with its kind of value.
	for _, tt := range []struct{ user, policy string }{{"ruth", "a"}, {"bo", "b"}} {
		d := decide(e, UserPrincipal(tt.user), "things/t1/data/temperature", ActRead, "care")
		if d.PolicyID != tt.policy {
			t.Errorf("%s: %s, want policy %s", tt.user, d.Reason(), tt.policy)
		}
	}
}

// A loaded population costs the garbage collector few objects: tuples are
// records in one slice and a policy's parts are carved from shared blocks,
// so the live heap objects grow far slower than the items loaded (they
// were about seven per tuple, each marked again every cycle).
func TestLoadHeapObjects(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 100,000 tuples")
	}
	const owners, guests, tuples = 1000, 5000, 100_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var s Snapshot
	for g := range guests {
		s.Users = append(s.Users, User{Name: fmt.Sprintf("guest-%d", g), Attributes: Attributes{"level": float64(g % 5)}})
	}
	for o := range owners {
		s.Users = append(s.Users, User{Name: fmt.Sprintf("owner-%d", o)})
		s.Places = append(s.Places, Place{ID: fmt.Sprintf("home-%d", o), Owner: fmt.Sprintf("owner-%d", o)})
		for i := range 10 {
			s.Things = append(s.Things, Thing{ID: fmt.Sprintf("t-%d-%d", o, i), Owner: fmt.Sprintf("owner-%d", o),
				Streams: []string{"temperature"}, Place: fmt.Sprintf("home-%d", o)})
			s.Policies = append(s.Policies, OwnedPolicy{Owner: fmt.Sprintf("owner-%d", o), Policy: Policy{ID: fmt.Sprintf("p%d", i),
				Effect: "allow", Subjects: []string{fmt.Sprintf("user:guest-%d", (o*7+i)%guests)}, Resources: []string{fmt.Sprintf("things/t-%d-%d/data/#", o, i)},
				Actions: []Action{ActRead}, When: &Condition{Attr: "requester.level", Op: OpGe, Value: 1.0}}})
		}
	}
	for i := range tuples {
		th, k := i%(owners*10), i/(owners*10)
		s.Relationships = append(s.Relationships, Relationship{Thing: fmt.Sprintf("t-%d-%d", th/10, th%10),
			User: fmt.Sprintf("guest-%d", (th+k*797)%guests), Relation: RelVisitor, Status: StatusActive, ValidFrom: t0})
	}
	e := NewEngine(Options{Clock: newFakeClock(t0)})
	if err := e.Load(s); err != nil {
		t.Fatal(err)
	}
	s = Snapshot{}
	runtime.GC()
	runtime.ReadMemStats(&after)
	objects := int64(after.HeapObjects) - int64(before.HeapObjects)
	if len(e.Relationships("t-3-4", "")) == 0 {
		t.Fatal("no tuples on t-3-4")
	}
	runtime.KeepAlive(e)
	t.Logf("%d live heap objects for %d tuples, %d policies, %d users", objects, tuples, owners*10, guests+owners)
	if objects > tuples/2 {
		t.Errorf("%d live heap objects for %d tuples: the population is not packed", objects, tuples)
	}
}

// Load lays the tuples out object by object; a later tuple in the snapshot
// still replaces an earlier one with the same object, user and relation,
// and each object's tuples are all there.
func TestLoadGroupsTuplesByObject(t *testing.T) {
	e := NewEngine(Options{Clock: newFakeClock(t0)})
	s := Snapshot{Users: []User{{Name: "an"}, {Name: "ruth"}}, Things: []Thing{{ID: "a", Owner: "an"}, {ID: "b", Owner: "an"}}}
	for i, th := range []string{"a", "b", "a", "b", "a"} {
		st := StatusActive
		if i == 0 {
			st = StatusPending // replaced by the tuple i=4
		}
		rel := []Relation{RelVisitor, RelVisitor, RelInstaller, RelCoOwner, RelVisitor}[i]
		s.Relationships = append(s.Relationships, Relationship{Thing: th, User: "ruth", Relation: rel, Status: st})
	}
	s.Relationships = append(s.Relationships, Relationship{Place: "a", User: "ruth", Relation: RelOwner, Status: StatusActive})
	if err := e.Load(s); err != nil {
		t.Fatal(err)
	}
	got := e.Relationships("a", "")
	if len(got) != 2 || got[0].Relation != RelInstaller || got[1].Relation != RelVisitor || got[1].Status != StatusActive {
		t.Errorf("thing a: %+v", got)
	}
	if got := e.Relationships("b", ""); len(got) != 2 {
		t.Errorf("thing b: %+v", got)
	}
	if got := e.Relationships("", "a"); len(got) != 1 || got[0].Relation != RelOwner {
		t.Errorf("place a: %+v", got)
	}
	rs := e.rels
	// Thing b's tuples were apart in the snapshot; their records are adjacent.
	b, _ := rs.object("b", "")
	if i := rs.objFirst(b); i == 0 || rs.recs[i].objNext != i-1 {
		t.Errorf("thing b: record %d is followed by %d", i, rs.recs[i].objNext)
	}
	// The user's chain (pairs) keeps the snapshot's order: installer, then visitor.
	obj, _ := rs.object("a", "")
	uid, _ := rs.names.lookup("ruth")
	var rels []uint8
	for i := rs.first(obj, uid); i != 0; i = rs.recs[i].next {
		rels = append(rels, rs.recs[i].relation)
	}
	if !slices.Equal(rels, []uint8{relInstaller, relVisitor}) {
		t.Errorf("ruth's tuples on a: %v", rels)
	}
}

// A decision expires at the earliest window boundary among the tuples it
// looked at, exactly to the nanosecond (valid_until + 1ns carries into the
// next second), in the boundary's own time zone.
func TestWindowExpiryEarliestBoundary(t *testing.T) {
	clock := newFakeClock(t0)
	e := household(t, clock)
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	until1 := time.Date(2026, 11, 26, 5, 30, 0, 999_999_999, tokyo) // 20:30 UTC
	until2 := time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)
	from3 := time.Date(2026, 11, 25, 21, 30, 0, 0, time.UTC)
	for _, r := range []Relationship{
		{Thing: "lock-1", User: "stranger", Relation: RelVisitor, Status: StatusActive, ValidUntil: until2},
		{Place: "hall", User: "stranger", Relation: RelInstaller, Status: StatusActive, ValidUntil: until1},
		{Place: "home-an", User: "stranger", Relation: RelCoOwner, Status: StatusActive, ValidFrom: from3},
	} {
		if err := e.PutRelationship(r); err != nil {
			t.Fatal(err)
		}
	}
	d := decide(e, UserPrincipal("stranger"), "things/lock-1/cmd/unlock", ActCommand, "")
	want := until1.Add(time.Nanosecond)
	if !d.Allowed() || d.Rule != "visitor" || !d.Expires.Equal(want) || d.Expires.Location() != tokyo || d.Expires.Nanosecond() != 0 {
		t.Fatalf("%s expires %v, want %v", d.Reason(), d.Expires, want)
	}
	clock.Set(want)
	if d := decide(e, UserPrincipal("stranger"), "things/lock-1/cmd/unlock", ActCommand, ""); !d.Allowed() || !d.Expires.Equal(from3) {
		t.Fatalf("after the installer window: %s expires %v, want %v", d.Reason(), d.Expires, from3)
	}
	clock.Set(from3)
	if d := decide(e, UserPrincipal("stranger"), "things/lock-1/cmd/unlock", ActCommand, ""); d.Rule != "co_owner" || !d.Expires.Equal(until2.Add(time.Nanosecond)) {
		t.Fatalf("in the co-owner window: %s expires %v", d.Reason(), d.Expires)
	}
}

// Co-owners' policies are candidates next to the owner's, merged in
// evaluation order, whether they were loaded or put, and a co-owner whose
// last policy is deleted adds none.
func TestCoOwnerPolicies(t *testing.T) {
	for _, load := range []bool{false, true} {
		e := household(t, newFakeClock(t0))
		allow := func(id string, prio int) Policy {
			return Policy{ID: id, Priority: prio, Effect: "allow", Subjects: []string{"user:stranger"},
				Resources: []string{"things/thermo-1/data/temperature"}, Actions: []Action{ActRead}}
		}
		deny := allow("d", 5)
		deny.Effect = "deny"
		if load {
			s := Snapshot{Users: []User{{Name: "an"}, {Name: "peter"}, {Name: "stranger"}},
				Places: []Place{{ID: "home-an", Owner: "an"}},
				Things: []Thing{{ID: "thermo-1", Owner: "an", Place: "home-an", Streams: []string{"temperature"}}},
				Relationships: []Relationship{{Place: "home-an", User: "peter", Relation: RelCoOwner, Status: StatusActive},
					{Thing: "thermo-1", User: "ruth", Relation: RelCoOwner, Status: StatusActive}},
				Policies: []OwnedPolicy{{Owner: "peter", Policy: allow("a", 1)}, {Owner: "an", Policy: deny}, {Owner: "ruth", Policy: allow("z", 9)}}}
			if err := e.Load(s); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := e.PutRelationship(Relationship{Thing: "thermo-1", User: "ruth", Relation: RelCoOwner, Status: StatusActive}); err != nil {
				t.Fatal(err)
			}
			for _, op := range []OwnedPolicy{{Owner: "peter", Policy: allow("a", 1)}, {Owner: "an", Policy: deny}, {Owner: "ruth", Policy: allow("z", 9)}} {
				if err := e.PutPolicy(op.Owner, op.Policy); err != nil {
					t.Fatal(err)
				}
			}
		}
		req := Request{Principal: UserPrincipal("stranger"), Topic: "things/thermo-1/data/temperature", Action: ActRead}
		check := func(step, want string) {
			t.Helper()
			d := e.DecideUncached(req)
			if got := d.Reason() + "/" + d.PolicyOwner; got != want {
				t.Errorf("load=%v %s: %s, want %s", load, step, got, want)
			}
		}
		check("all three", "policy:a/peter")
		e.DeletePolicy("peter", "a")
		check("peter's deleted", "policy:d/an")
		e.DeletePolicy("an", "d")
		check("an's deleted", "policy:z/ruth")
		e.DeletePolicy("ruth", "z")
		check("none left", "deny:default/")
		if err := e.PutPolicy("peter", allow("b", 2)); err != nil {
			t.Fatal(err)
		}
		check("peter's again", "policy:b/peter")
	}
}

// A resource's literal prefix only ever rejects topics its filter does
// not match.
func TestResourcePrefix(t *testing.T) {
	for f, want := range map[string]string{
		"things/t-1/data/#": "things/t-1/data", "things/+/data/x": "things", "#": "", "+/a": "",
		"things/t-1/state": "things/t-1/state", "a//b/+": "a//b", "a/b+/c": "a/b+/c",
	} {
		if got := literalPrefix(f); got != want {
			t.Errorf("literalPrefix(%q) = %q, want %q", f, got, want)
		}
	}
	filters := []string{"#", "+", "things/#", "things/+/data/#", "things/t-1/data/#", "things/t-1/data/loc",
		"things/t-1", "things/t-1/+", "things//x", "+/t-1/#", "things/t-1/data/+/x", "things/t-10/#", "$SYS/#"}
	topics := []string{"things", "things/t-1", "things/t-1/data", "things/t-1/data/loc", "things/t-10/data/loc",
		"things/t-1/state", "things//x", "thingsx/t-1", "$SYS/x", "things/t-1/data/a/x", ""}
	for _, f := range filters {
		r := resource{filter: f, prefix: literalPrefix(f)}
		for _, topic := range topics {
			if got, want := r.matches(topic, Resource{}), MatchTopic(f, topic); got != want {
				t.Errorf("%q on %q: %v, MatchTopic %v", f, topic, got, want)
			}
		}
	}
}

// A decision that depends on as many generations as an entry holds is
// cached, however often evaluation meets them again.
func TestDependDedupsWhenFull(t *testing.T) {
	e := NewEngine(Options{})
	var gens [maxDeps]generation
	x := evalCtx{e: e}
	for i := range gens {
		x.depend(&gens[i])
	}
	x.depend(&gens[0])
	if x.uncacheable || x.ndeps != maxDeps {
		t.Fatalf("uncacheable %v, %d deps", x.uncacheable, x.ndeps)
	}
	x.depend(&generation{})
	if !x.uncacheable {
		t.Fatal("one generation too many is cacheable")
	}
}

// The engine keeps a policy only in compiled form: what Policies returns is
// put back together from it, and must equal what was put, through PutPolicy
// and through Load alike.
func TestPoliciesReadBackAsPut(t *testing.T) {
	if err := NewEngine(Options{}).PutPolicy("an", Policy{ID: "x", Effect: "allow", Resources: []string{"stream:"}}); err == nil {
		t.Error(`resource "stream:" accepted`)
	}
	lo, hi := -5.0, 40.0
	many := make([]Action, 0, 18) // over the 16 a compiled policy orders in place
	for i := range 18 {
		many = append(many, Actions[i%len(Actions)])
	}
	tests := []Policy{
		{ID: "plain", Priority: 1, Effect: "allow", Subjects: []string{"user:ruth"}, Resources: []string{"things/t1/data/#"}, Actions: []Action{ActRead}},
		{ID: "every-kind", Priority: -3, Effect: "deny", Description: "all kinds of subject and resource",
			Subjects:  []string{"*", "user:ruth", "thing:t1", "role:doctor", "relation:co_owner", "org:acme#member", "place:home#visitor"},
			Resources: []string{"stream:location", "things/+/state", "things/t1/data/temperature", "#"},
			Actions:   []Action{ActHistory, ActRead, ActCommand, ActPublish}, Purposes: []string{"care", "research"}},
		{ID: "nil-lists", Effect: "allow"},
		{ID: "empty-lists", Effect: "allow", Subjects: []string{}, Resources: []string{}, Actions: []Action{}, Purposes: []string{}},
		{ID: "repeated-actions", Effect: "allow", Subjects: []string{"user:bo"}, Resources: []string{"things/t1/data/#"}, Actions: many},
		{ID: "sixteen-actions", Effect: "allow", Subjects: []string{"user:bo"}, Resources: []string{"things/t1/data/#"}, Actions: many[:16]},
		{ID: "in-nothing", Effect: "allow", Subjects: []string{"role:doctor"}, Resources: []string{"stream:x"}, Actions: []Action{ActRead},
			When: &Condition{Attr: "requester.role", Op: OpIn, Value: []any{}}},
		{ID: "in-nil", Effect: "allow", Subjects: []string{"role:doctor"}, Resources: []string{"stream:x"}, Actions: []Action{ActRead},
			When: &Condition{Attr: "requester.role", Op: OpIn, Value: []any(nil)}},
		{ID: "constrained", Priority: 7, Effect: "allow", Subjects: []string{"role:doctor"}, Resources: []string{"stream:temperature"},
			Actions: []Action{ActRead}, When: &Condition{Any: []Condition{{Attr: "requester.level", Op: OpGe, Value: 2.0}, {All: []Condition{}}}},
			Constraints: []Constraint{{Kind: ConstraintAccuracy, Field: "temperature", Step: 0.5}, {Kind: ConstraintRange, Field: "temperature", Min: &lo, Max: &hi}}},
	}
	put := NewEngine(Options{Clock: newFakeClock(t0)})
	snap := Snapshot{Users: []User{{Name: "an"}}}
	for _, p := range tests {
		if err := put.PutPolicy("an", p); err != nil {
			t.Fatalf("%s: %v", p.ID, err)
		}
		snap.Policies = append(snap.Policies, OwnedPolicy{Owner: "an", Policy: p})
	}
	loaded := NewEngine(Options{Clock: newFakeClock(t0)})
	if err := loaded.Load(snap); err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]*Engine{"PutPolicy": put, "Load": loaded} {
		got := map[string]Policy{}
		for _, p := range e.Policies("an") {
			got[p.ID] = p
		}
		for _, want := range tests {
			if !reflect.DeepEqual(got[want.ID], want) {
				t.Errorf("%s: policy %s reads back as\n%+v\nwant\n%+v", name, want.ID, got[want.ID], want)
			}
		}
	}
}

// Load keeps one map for equal attributes and one list for equal streams;
// what User and Thing hand out is the caller's to change.
func TestLoadSharesEqualAttributes(t *testing.T) {
	snap := Snapshot{
		Users: []User{{Name: "a", Attributes: Attributes{"role": "guest", "level": 1}}, {Name: "b", Attributes: Attributes{"level": 1.0, "role": "guest"}},
			{Name: "c", Attributes: Attributes{"role": "guest", "level": 2.0}}},
		Things: []Thing{{ID: "t1", Streams: []string{"temperature"}, Attributes: Attributes{"room": "hall"}},
			{ID: "t2", Streams: []string{"temperature"}, Attributes: Attributes{"room": "hall"}}},
		Places: []Place{{ID: "home", Attributes: Attributes{"floors": 2}}},
	}
	e := NewEngine(Options{Clock: newFakeClock(t0)})
	if err := e.Load(snap); err != nil {
		t.Fatal(err)
	}
	e.mu.RLock()
	sameMap := func(x, y Attributes) bool {
		return reflect.ValueOf(x).UnsafePointer() == reflect.ValueOf(y).UnsafePointer()
	}
	if !sameMap(e.users["a"].Attributes, e.users["b"].Attributes) || sameMap(e.users["a"].Attributes, e.users["c"].Attributes) {
		t.Error("equal attributes not shared, or differing ones shared")
	}
	if !sameMap(e.things["t1"].Attributes, e.things["t2"].Attributes) || &e.things["t1"].Streams[0] != &e.things["t2"].Streams[0] {
		t.Error("equal thing attributes or streams not shared")
	}
	e.mu.RUnlock()
	a, _ := e.User("a")
	a.Attributes["level"] = 5.0
	t1, _ := e.Thing("t1")
	t1.Attributes["room"], t1.Streams[0] = "attic", "location"
	if b, _ := e.User("b"); b.Attributes["level"] != 1.0 {
		t.Errorf("a change to a's copy reached b: %v", b.Attributes)
	}
	if t2, _ := e.Thing("t2"); t2.Attributes["room"] != "hall" || t2.Streams[0] != "temperature" {
		t.Errorf("a change to t1's copy reached t2: %+v", t2)
	}
	if p, _ := e.Place("home"); p.Attributes["floors"] != 2.0 {
		t.Errorf("a place's attributes are not normalized as PutPlace does: %#v", p.Attributes)
	}
	if err := NewEngine(Options{}).Load(Snapshot{Places: []Place{{ID: "p", Attributes: Attributes{"x": []int{1}}}}}); err == nil {
		t.Error("a place with a list attribute loaded")
	}
}

// Load keeps one view for equal constraints of different owners, but not
// for a pseudonymization, whose pseudonyms differ by owner.
func TestLoadSharesEqualViews(t *testing.T) {
	round := []Constraint{{Kind: ConstraintAccuracy, Field: "lat", Step: 0.01}}
	pseudonym := []Constraint{{Kind: ConstraintPseudonymize, Field: "device"}}
	policy := func(owner, id string, cs []Constraint) OwnedPolicy {
		return OwnedPolicy{Owner: owner, Policy: Policy{ID: id, Effect: "allow", Subjects: []string{"role:doctor"},
			Resources: []string{"stream:location"}, Actions: []Action{ActRead}, Constraints: slices.Clone(cs)}}
	}
	snap := Snapshot{Users: []User{{Name: "an"}, {Name: "bo"}}, Policies: []OwnedPolicy{
		policy("an", "round", round), policy("bo", "round", round), policy("an", "coarser", []Constraint{{Kind: ConstraintAccuracy, Field: "lat", Step: 0.1}}),
		policy("an", "pseudonym", pseudonym), policy("bo", "pseudonym", pseudonym)}}
	e := NewEngine(Options{Clock: newFakeClock(t0), Secret: []byte("engine secret")})
	if err := e.Load(snap); err != nil {
		t.Fatal(err)
	}
	view := func(owner, id string) *View {
		for _, c := range e.policies[owner] {
			if c.id == id {
				return c.view
			}
		}
		t.Fatalf("no policy %s/%s", owner, id)
		return nil
	}
	if view("an", "round") != view("bo", "round") {
		t.Error("equal constraints of two owners: two views")
	}
	if view("an", "round") == view("an", "coarser") {
		t.Error("differing constraints share a view")
	}
	if view("an", "pseudonym") == view("bo", "pseudonym") {
		t.Error("two owners' pseudonymizations share a view")
	}
	an := e.Policies("an")
	for i := range an {
		if an[i].ID == "round" {
			an[i].Constraints[0].Step = 1
		}
	}
	for _, p := range e.Policies("bo") {
		if p.ID == "round" && p.Constraints[0].Step != 0.01 {
			t.Errorf("a change to an's copy reached bo's policy: %+v", p.Constraints)
		}
	}
}

// env.* decisions expire when the local hour, minute or date next changes,
// also on the days clocks change: in the hour a clock goes back, the hour
// changes at the first 02:00, not the second.
func TestEnvBoundariesAcrossClockChanges(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	havana, err := time.LoadLocation("America/Havana") // clocks go back from 01:00 to 00:00
	if err != nil {
		t.Fatal(err)
	}
	azores, err := time.LoadLocation("Atlantic/Azores") // clocks skip midnight in March
	if err != nil {
		t.Fatal(err)
	}
	chatham, err := time.LoadLocation("Pacific/Chatham") // clocks change at :45
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		name string
		now  time.Time // as UTC instants
		loc  *time.Location
		hour time.Time
		day  time.Time
	}{
		{"an ordinary hour", utc("2026-11-26T20:30:15Z"), berlin, utc("2026-11-26T21:00:00Z"), utc("2026-11-26T23:00:00Z")},
		{"01:30 CEST before the clocks go back", utc("2026-10-24T23:30:00Z"), berlin, utc("2026-10-25T00:00:00Z"), utc("2026-10-25T23:00:00Z")},
		{"the first 02:30 (CEST)", utc("2026-10-25T00:30:00Z"), berlin, utc("2026-10-25T01:00:00Z"), utc("2026-10-25T23:00:00Z")},
		{"the second 02:30 (CET)", utc("2026-10-25T01:30:00Z"), berlin, utc("2026-10-25T02:00:00Z"), utc("2026-10-25T23:00:00Z")},
		{"01:30 CET before the clocks go forward", utc("2026-03-29T00:30:00Z"), berlin, utc("2026-03-29T01:00:00Z"), utc("2026-03-29T22:00:00Z")},
		// Havana goes back from 01:00 CDT to 00:00 CST on 2026-11-01:
		// midnight comes twice, and the date changes at the first.
		{"23:30 before midnight comes twice", utc("2026-11-01T03:30:00Z"), havana, utc("2026-11-01T04:00:00Z"), utc("2026-11-01T04:00:00Z")},
		{"the first 00:30 (CDT)", utc("2026-11-01T04:30:00Z"), havana, utc("2026-11-01T05:00:00Z"), utc("2026-11-02T05:00:00Z")},
		// The Azores go from 00:00 (-01) to 01:00 (+00) on 2026-03-29:
		// midnight never comes, and the date changes at the skip.
		{"23:30 before midnight is skipped", utc("2026-03-29T00:30:00Z"), azores, utc("2026-03-29T01:00:00Z"), utc("2026-03-29T01:00:00Z")},
		// Chatham goes back from 03:45 (+13:45) to 02:45 (+12:45) at
		// 14:00 UTC on 2026-04-04: the hour changes then, not at 04:00.
		{"03:35 before the clocks go back at :45", utc("2026-04-04T13:50:00Z"), chatham, utc("2026-04-04T14:00:00Z"), utc("2026-04-05T11:15:00Z")},
	} {
		local := c.now.In(c.loc)
		if got := nextHour(local); !got.Equal(c.hour) {
			t.Errorf("%s (%s): next hour %s, want %s", c.name, local, got.UTC(), c.hour)
		}
		if got := nextDay(local); !got.Equal(c.day) {
			t.Errorf("%s (%s): next day %s, want %s", c.name, local, got.UTC(), c.day)
		}
	}
	// Through the engine: a decision under env.hour at 01:30 CEST holds
	// until 02:00 CEST, not 02:00 CET an hour later.
	clock := newFakeClock(utc("2026-10-24T23:30:00Z"))
	e := envEngine(clock, berlin, &Condition{Attr: "env.hour", Op: OpEq, Value: 1.0})
	d := decide(e, UserPrincipal("x"), "things/w/state", ActRead, "")
	if !d.Allowed() || !d.Expires.Equal(utc("2026-10-25T00:00:00Z")) {
		t.Fatalf("at 01:30 CEST: %s, expires %s; want allowed until 00:00 UTC", d.Reason(), d.Expires.UTC())
	}

	// A Saturday-only grant in the Azores, late on the Saturday before
	// midnight is skipped, ends with the Saturday.
	clock = newFakeClock(utc("2026-03-29T00:30:00Z"))
	e = envEngine(clock, azores, &Condition{Attr: "env.weekday", Op: OpEq, Value: "saturday"})
	if d := decide(e, UserPrincipal("x"), "things/w/state", ActRead, ""); !d.Allowed() || !d.Expires.Equal(utc("2026-03-29T01:00:00Z")) {
		t.Fatalf("Saturday 23:30 in the Azores: %s, expires %s; want allowed until 01:00 UTC", d.Reason(), d.Expires.UTC())
	}
	clock.Set(utc("2026-03-29T01:00:00Z"))
	if d := decide(e, UserPrincipal("x"), "things/w/state", ActRead, ""); d.Allowed() {
		t.Fatal("the Saturday-only grant still holds on Sunday")
	}
}

// Around every clock change of 2026 in zones with unusual ones, an env.*
// boundary is never late: up to the instant before it, the local hour,
// minute and date are still those the decision was made at.
func TestEnvBoundariesNeverLate(t *testing.T) {
	for _, name := range []string{"Europe/Berlin", "America/Havana", "Atlantic/Azores", "Pacific/Chatham",
		"Australia/Lord_Howe", "America/Santiago", "Asia/Kathmandu", "America/St_Johns"} {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		for at := time.Date(2026, 1, 1, 0, 0, 0, 0, loc); at.Year() == 2026; {
			_, end := at.ZoneBounds()
			if end.IsZero() || end.Year() > 2026 {
				break
			}
			for x := end.Add(-26 * time.Hour); x.Before(end.Add(2 * time.Hour)); x = x.Add(7*time.Minute + 13*time.Second) {
				l := x.In(loc)
				for _, c := range []struct {
					what string
					next time.Time
					same func(time.Time) bool
				}{
					{"hour", nextHour(l), func(y time.Time) bool { return y.Hour() == l.Hour() }},
					{"minute", nextMinute(l), func(y time.Time) bool { return y.Minute() == l.Minute() }},
					{"date", nextDay(l), func(y time.Time) bool { return y.YearDay() == l.YearDay() }},
				} {
					if !c.next.After(l) || !c.same(c.next.Add(-time.Nanosecond).In(loc)) {
						t.Fatalf("%s at %s: next %s change at %s is not the first", name, l, c.what, c.next.In(loc))
					}
				}
			}
			at = end
		}
	}
}

// DecideAt answers as of the given instant, whatever the clock says, and
// leaves the cache alone.
func TestDecideAt(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock(time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)) // 09:00 in Berlin
	e := envEngine(clock, berlin, &Condition{Attr: "env.hour", Op: OpLt, Value: 18.0})
	req := Request{Principal: UserPrincipal("x"), Topic: "things/w/state", Action: ActRead}
	if d := e.DecideAt(req, time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)); d.Allowed() {
		t.Fatalf("as of 23:00 in Berlin: %s, want denied", d.Reason())
	}
	if d := e.Decide(req); !d.Allowed() {
		t.Fatalf("now (09:00 in Berlin): %s, want allowed", d.Reason())
	}
	if d := e.DecideAt(req, time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)); !d.Allowed() {
		t.Fatalf("as of 08:00 in Berlin: %s, want allowed", d.Reason())
	}
}

// A view kept outside the engine as its constraints and whose policy it came
// from is compiled again to the same view: the same key, the same output,
// pseudonyms under the owner's key included.
func TestViewForRebuildsAPolicysView(t *testing.T) {
	e := NewEngine(Options{Secret: []byte("test")})
	for _, u := range []User{{Name: "an"}, {Name: "bo"}, {Name: "doctor", Attributes: Attributes{"role": "doctor"}}} {
		if err := e.PutUser(u); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.PutThing(Thing{ID: "watch-1", Owner: "an", Kind: "sensor", Streams: []string{"location"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.PutPolicy("an", Policy{ID: "coarse", Priority: 10, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/watch-1/data/location"}, Actions: []Action{ActRead},
		Constraints: []Constraint{{Kind: ConstraintAccuracy, Field: "lat", Step: 0.01}, {Kind: ConstraintPseudonymize, Field: "id"}}}); err != nil {
		t.Fatal(err)
	}
	d := e.Decide(Request{Principal: UserPrincipal("doctor"), Topic: "things/watch-1/data/location", Action: ActRead})
	if d.View == nil || d.PolicyOwner != "an" {
		t.Fatalf("decision: view %v, policy owner %q", d.View, d.PolicyOwner)
	}
	again, err := e.ViewFor(d.PolicyOwner, d.View.Constraints())
	if err != nil {
		t.Fatal(err)
	}
	in := []byte(`{"lat":48.77583,"id":"an-watch"}`)
	want, _ := d.View.Apply(in)
	got, err := again.Apply(in)
	if again.Key() != d.View.Key() || err != nil || string(got) != string(want) {
		t.Errorf("rebuilt view: key %q, %s (%v); want key %q, %s", again.Key(), got, err, d.View.Key(), want)
	}
	other, err := e.ViewFor("bo", d.View.Constraints())
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := other.Apply(in); other.Key() == d.View.Key() || string(out) == string(want) {
		t.Errorf("another owner's view pseudonymizes alike: key %q, %s", other.Key(), out)
	}
}

// TestHasRates: the engine knows whether any policy in force has a rate
// constraint, through puts, replacements, deletions and loads.
func TestHasRates(t *testing.T) {
	parse := func(id string, rate bool) Policy {
		t.Helper()
		cs := ``
		if rate {
			cs = `,"constraints":[{"kind":"rate","seconds":3600}]`
		}
		p, err := ParsePolicy([]byte(`{"id":"` + id + `","priority":1,"effect":"allow","subjects":["user:doctor"],` +
			`"resources":["things/w/data/hr"],"actions":["read"]` + cs + `}`))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	e := NewEngine(Options{Secret: []byte("k")})
	step := func(what string, want bool) {
		t.Helper()
		if got := e.HasRates(); got != want {
			t.Errorf("%s: HasRates %v, want %v", what, got, want)
		}
	}
	step("empty", false)
	_ = e.PutPolicy("an", parse("a", false))
	step("a policy without a rate", false)
	_ = e.PutPolicy("an", parse("a", true))
	step("a replaced by one with a rate", true)
	_ = e.PutPolicy("an", parse("b", true))
	e.DeletePolicy("an", "a")
	step("a deleted, b with a rate", true)
	_ = e.PutPolicy("an", parse("b", false))
	step("b replaced by one without", false)
	_ = e.PutPolicy("an", parse("c", true))
	if err := e.Load(Snapshot{Policies: []OwnedPolicy{{Owner: "an", Policy: parse("d", false)}}}); err != nil {
		t.Fatal(err)
	}
	step("a load without rates", false)
	if err := e.Load(Snapshot{Policies: []OwnedPolicy{{Owner: "an", Policy: parse("d", true)}}}); err != nil {
		t.Fatal(err)
	}
	step("a load with one", true)
}
