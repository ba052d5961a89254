package hooks

import (
	"fmt"
	"testing"
	"time"

	"github.com/veil-iot/veil/policies"
)

func TestParseCfg(t *testing.T) {
	tests := []struct {
		topic string
		want  cfgTopic
		ok    bool
	}{
		{"$config/users/an/policies/p1", cfgTopic{kind: "policy", owner: "an", id: "p1"}, true},
		{"$config/users/an/audit", cfgTopic{kind: "audit", owner: "an"}, true},
		{"$config/users/an/audit/query", cfgTopic{kind: "audit-query", owner: "an"}, true},
		{"$config/things/lock-1", cfgTopic{kind: "thing", thing: "lock-1"}, true},
		{"$config/things/lock-1/claim", cfgTopic{kind: "claim", thing: "lock-1"}, true},
		{"$config/things/lock-1/relations/ruth", cfgTopic{kind: "relation", thing: "lock-1", user: "ruth"}, true},
		{"$config/places/home/relations/ruth", cfgTopic{kind: "relation", place: "home", user: "ruth"}, true},
		{"$config/invitations/ruth/abc", cfgTopic{kind: "invitation", owner: "ruth", id: "abc"}, true},
		{"$config/invitations/ruth/abc/answer", cfgTopic{kind: "answer", owner: "ruth", id: "abc"}, true},
		{"$config/replies/x/y", cfgTopic{kind: "replies"}, true},
		{"$enroll/JL-1", cfgTopic{kind: "enroll", serial: "JL-1"}, true},
		{"$enroll/JL-1/x", cfgTopic{}, false},
		{"$enroll/", cfgTopic{}, false},
		{"$config/users/an/policies", cfgTopic{}, false},
		{"$config/users/an/policies/p1/x", cfgTopic{}, false},
		{"$config/things//relations/ruth", cfgTopic{}, false},
		{"$config/things/lock-1/relations/+", cfgTopic{}, false},
		{"$config/places/home", cfgTopic{}, false},
		{"$config/other/x", cfgTopic{}, false},
		{"things/lock-1", cfgTopic{}, false},
	}
	for _, tc := range tests {
		got, ok := parseCfg(tc.topic)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseCfg(%q) = %+v, %v; want %+v, %v", tc.topic, got, ok, tc.want, tc.ok)
		}
	}
}

func TestMayPublishAndSubscribe(t *testing.T) {
	e := policies.NewEngine(policies.Options{})
	for _, u := range []policies.User{{Name: "an"}, {Name: "ruth"}, {Name: "root", Admin: true}} {
		if err := e.PutUser(u); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.PutThing(policies.Thing{ID: "lock-1", Owner: "an"}); err != nil {
		t.Fatal(err)
	}
	c := &Control{engine: e, clock: policies.SystemClock{}}
	an, ruth, root := policies.UserPrincipal("an"), policies.UserPrincipal("ruth"), policies.UserPrincipal("root")
	dev, thing := policies.Principal{Kind: policies.KindDevice, ID: "JL-1"}, policies.ThingPrincipal("lock-1")
	pub := []struct {
		p       policies.Principal
		topic   string
		handled bool
		allowed bool
	}{
		{an, "$config/users/an/policies/p", true, true},
		{ruth, "$config/users/an/policies/p", true, true}, // admitted, refused and answered in OnPublish
		{an, "$config/replies/x", true, false},
		{an, "$config/invitations/an/abc", true, false},
		{an, "$config/users/an/audit", true, false},
		{an, "$config/nonsense/x", true, true}, // answered "unknown configuration topic"
		{thing, "$config/things/lock-1", true, false},
		{dev, "$enroll/JL-1", true, true},
		{dev, "$enroll/JL-2", true, false},
		{an, "$enroll/JL-1", true, false},
		{dev, "$config/things/lock-1", true, false},
		{an, "$history/x", false, false},
	}
	for _, tc := range pub {
		h, a := c.MayPublish(nil, tc.p, tc.topic)
		if h != tc.handled || a != tc.allowed {
			t.Errorf("MayPublish(%s, %s) = %v, %v; want %v, %v", tc.p, tc.topic, h, a, tc.handled, tc.allowed)
		}
	}
	sub := []struct {
		p      policies.Principal
		filter string
		want   bool
	}{
		{an, "$config/users/an/#", true},
		{ruth, "$config/users/an/#", false},
		{root, "$config/users/an/#", true},
		{an, "$config/things/lock-1/#", true},
		{ruth, "$config/things/lock-1/#", false},
		{ruth, "$config/things/no-such/#", false}, // same answer: existence is not revealed
		{ruth, "$config/things/+/relations/+", true},
		{ruth, "$config/#", true},
		{ruth, "$config/invitations/ruth/#", true},
		{ruth, "$config/invitations/an/#", false},
		{dev, "$config/#", false},
		{an, "$enroll/#", false},
	}
	for _, tc := range sub {
		if _, a := c.MaySubscribe(nil, tc.p, tc.filter); a != tc.want {
			t.Errorf("MaySubscribe(%s, %s) = %v, want %v", tc.p, tc.filter, a, tc.want)
		}
	}
}

func TestMayGrant(t *testing.T) {
	tests := []struct {
		role string
		rel  policies.Relation
		want bool
	}{
		{"owner", policies.RelCoOwner, true},
		{"owner", policies.RelVisitor, true},
		{"owner", policies.RelInstaller, false},
		{"co_owner", policies.RelVisitor, true},
		{"co_owner", policies.RelOwner, true},
		{"installer", policies.RelOwner, true},
		{"installer", policies.RelVisitor, false},
		{"visitor", policies.RelVisitor, false},
		{"", policies.RelVisitor, false},
	}
	for _, tc := range tests {
		if got := mayGrant(tc.role, tc.rel); got != tc.want {
			t.Errorf("mayGrant(%q, %s) = %v, want %v", tc.role, tc.rel, got, tc.want)
		}
	}
}

func TestDecodeStrict(t *testing.T) {
	type doc struct {
		Relation   string            `json:"relation"`
		Accept     *bool             `json:"accept"`
		Streams    []string          `json:"streams"`
		Attributes map[string]string `json:"attributes"`
	}
	tests := []struct{ in, want string }{
		{`{"relation":"visitor"}`, ""},
		{`{"relation":"visitor","x":1}`, "x: unknown field"},
		{`{"relation":1}`, "relation: must be a string"},
		{`{"accept":"yes"}`, "accept: must be a boolean"},
		{`{"relation":"visitor"} {}`, "trailing data after the JSON object"},
		{`[1]`, "not a JSON object"},
		// null would decode as an empty document, wiping what it replaces.
		{`null`, "not a JSON object"},
		{` "visitor"`, "not a JSON object"},
		// encoding/json keeps the last of duplicate keys, at any depth.
		{`{"relation":"visitor","relation":"owner"}`, "relation: duplicate key"},
		{`{"relation":"visitor","Relation":"owner"}`, "Relation: duplicate key"},
		// and its folding is Unicode's: the long s is an s.
		{`{"streams":["temperature"],"ſtreams":["location"]}`, "ſtreams: duplicate key"},
		// Keys of a map (attributes) are distinct as written.
		{`{"relation":"visitor","attributes":{"Room":"hall","room":"101"}}`, ""},
		{`{"relation":"visitor","x":{"a":1,"a":2}}`, "x.a: duplicate key"},
		{`{"relation":"visitor","x":[{"a":1},{"b":1,"b":2}]}`, "x[1].b: duplicate key"},
		{`{"relation":"visitor","x":{"a":1},"y":{"a":1}}`, "x: unknown field"},
	}
	for _, tc := range tests {
		var d doc
		err := decodeStrict([]byte(tc.in), &d)
		if (tc.want == "" && err != nil) || (tc.want != "" && (err == nil || !contains(err.Error(), tc.want))) {
			t.Errorf("decodeStrict(%s) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestTimeOrAgo(t *testing.T) {
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	def := now.Add(-time.Hour)
	tests := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"", def, false},
		{"30m", now.Add(-30 * time.Minute), false},
		{"2026-11-25T18:00:00Z", time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC), false},
		{"yesterday", time.Time{}, true},
	}
	for _, tc := range tests {
		got, err := timeOrAgo(tc.in, now, def)
		if (err != nil) != tc.err || !got.Equal(tc.want) {
			t.Errorf("timeOrAgo(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestAuditRecordAggregatesWithoutAllocating(t *testing.T) {
	a := NewAudit(AuditConfig{})
	doctor := policies.UserPrincipal("doctor")
	d := policies.Decision{Effect: policies.Allow, Rule: "policy", PolicyID: "doctor-location", PolicyOwner: "an",
		Owner: "an", Thing: "watch-1", Stream: "location", View: &policies.View{}}
	a.Record(doctor, policies.ActRead, "diagnosis", &d, 1) // creates the minute's key
	allocs := testing.AllocsPerRun(1000, func() { a.Record(doctor, policies.ActRead, "diagnosis", &d, 1) })
	if allocs != 0 {
		t.Fatalf("Record allocates %.1f times per call", allocs)
	}
	owner := policies.Decision{Effect: policies.Allow, Rule: "owner", Owner: "an", Thing: "watch-1", Stream: "location"}
	a.Record(policies.UserPrincipal("an"), policies.ActRead, "", &owner, 1)
	a.Record(policies.UserPrincipal("peter"), policies.ActRead, "", &policies.Decision{Effect: policies.Allow, Rule: "co_owner", Owner: "an", Thing: "watch-1"}, 1)
	a.Record(policies.UserPrincipal("x"), policies.ActRead, "", &policies.Decision{Rule: "unknown-thing"}, 1)
	a.Record(policies.UserPrincipal("stranger"), policies.ActRead, "", &policies.Decision{Rule: "default", Owner: "an", Thing: "watch-1", Stream: "location"}, 1)
	var n int
	var total int64
	for i := range a.shards {
		a.shards[i].drain()
		for k, c := range a.shards[i].m {
			n++
			total += c
			if k.who == "doctor" && (c != 1002 || k.effect != effectConstrained || k.purpose != "diagnosis") {
				t.Fatalf("doctor's record %+v = %d", k, c)
			}
			if k.who == "stranger" && k.effect != effectDeny {
				t.Fatalf("stranger's record %+v", k)
			}
		}
	}
	if n != 2 || total != 1003 {
		t.Fatalf("%d records, %d decisions; want 2 (doctor, stranger) and 1003", n, total)
	}
}

// TestAuditRecordManyKeysOneShard interleaves more keys of one principal
// (one shard) than the shard's recent counts hold: evicted counts must land
// in the map, none twice.
func TestAuditRecordManyKeysOneShard(t *testing.T) {
	a := NewAudit(AuditConfig{})
	doctor := policies.UserPrincipal("doctor")
	purposes := []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"}
	for round := 0; round < 50; round++ {
		for i, purpose := range purposes {
			for range i + 1 {
				a.Record(doctor, policies.ActRead, purpose, &policies.Decision{Rule: "default", Owner: "an", Thing: "watch-1", Stream: "location"}, 1)
			}
		}
	}
	got := map[string]int64{}
	for i := range a.shards {
		a.shards[i].drain()
		for k, c := range a.shards[i].m {
			got[k.purpose] += c
		}
	}
	for i, purpose := range purposes {
		if want := int64(50 * (i + 1)); got[purpose] != want {
			t.Errorf("purpose %s: %d decisions counted, want %d", purpose, got[purpose], want)
		}
	}
}

// On the wall clock a running audit reads the minute a ticker keeps, not
// the clock; the minute must be the current one, and be dropped on stop.
func TestAuditKeepsTheMinute(t *testing.T) {
	a := NewAudit(AuditConfig{})
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		a.keepMinute(stop)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for a.minute.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the minute was never kept")
		}
		time.Sleep(time.Millisecond)
	}
	before := time.Now().Unix() / 60
	got := a.currentMinute()
	if after := time.Now().Unix() / 60; got < before-1 || got > after {
		t.Fatalf("minute %d, want %d..%d", got, before-1, after)
	}
	close(stop)
	<-done
	if m := a.minute.Load(); m != 0 {
		t.Fatalf("minute %d kept after stop", m)
	}
	at := time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)
	clock := &settableClock{}
	clock.Set(at)
	a = NewAudit(AuditConfig{Clock: clock})
	if got, want := a.currentMinute(), at.Unix()/60; got != want {
		t.Fatalf("minute %d on a test clock, want %d", got, want)
	}
}

func BenchmarkAuditRecord(b *testing.B) {
	a := NewAudit(AuditConfig{})
	p := policies.UserPrincipal("doctor")
	d := policies.Decision{Effect: policies.Allow, Rule: "policy", PolicyID: "doctor-location", PolicyOwner: "an",
		Owner: "an", Thing: "watch-1", Stream: "location", View: &policies.View{}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.Record(p, policies.ActRead, "diagnosis", &d, 1)
		}
	})
}

// BenchmarkAuditRecordFanIn is one subscriber's deliveries from 30 things,
// recorded from parallel publishers.
func BenchmarkAuditRecordFanIn(b *testing.B) {
	a := NewAudit(AuditConfig{})
	p := policies.UserPrincipal("doctor")
	ds := make([]policies.Decision, 30)
	for i := range ds {
		ds[i] = policies.Decision{Effect: policies.Allow, Rule: "policy", PolicyID: "doctor-thermo", PolicyOwner: "an",
			Owner: "an", Thing: fmt.Sprintf("sensor-%d", i+1), Stream: "temperature", View: &policies.View{}}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			a.Record(p, policies.ActRead, "", &ds[i%len(ds)], 1)
			i += 7
		}
	})
}
