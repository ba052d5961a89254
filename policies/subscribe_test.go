package policies

import "testing"

// TestMayReadAnything: false only for a user nothing names; every grant
// path the engine has (ownership, any relationship, an allow-read policy
// by name, role, userset or for anyone) makes it true, and Changes moves
// with every configuration change.
func TestMayReadAnything(t *testing.T) {
	e := household(t, newFakeClock(t0))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"nobody", "eve", "mallory", "member", "anyone"} {
		must(e.PutUser(User{Name: u}))
	}
	must(e.PutPolicy("an", Policy{ID: "deny-eve", Priority: 1, Effect: "deny", Subjects: []string{"user:eve"},
		Resources: []string{"things/+/data/#"}, Actions: []Action{ActRead}}))
	must(e.PutPolicy("an", Policy{ID: "command-mallory", Priority: 2, Effect: "allow", Subjects: []string{"user:mallory"},
		Resources: []string{"things/lock-1/command/#"}, Actions: []Action{ActCommand}}))
	must(e.PutPolicy("an", Policy{ID: "doctors", Priority: 3, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/watch-1/data/location"}, Actions: []Action{ActRead},
		When: &Condition{Attr: "env.hour", Op: OpGe, Value: 25.0}})) // never holds: still a path
	must(e.PutPolicy("an", Policy{ID: "acme", Priority: 4, Effect: "allow", Subjects: []string{"org:acme#member"},
		Resources: []string{"things/thermo-1/data/#"}, Actions: []Action{ActRead}}))
	must(e.PutMembership(Membership{Group: "org:acme", Relation: "member", Member: "user:member"}))

	for _, tc := range []struct {
		who  Principal
		want bool
	}{
		{UserPrincipal("stranger"), false},
		{UserPrincipal("nobody"), false},
		{UserPrincipal("eve"), false},     // only a deny names her
		{UserPrincipal("mallory"), false}, // only a command grant
		{UserPrincipal("no-such-user"), false},
		{UserPrincipal("an"), true},      // owns things
		{UserPrincipal("peter"), true},   // co-owner of a place
		{UserPrincipal("ruth"), true},    // a visitor, whatever the window
		{UserPrincipal("patrick"), true}, // installer
		{UserPrincipal("doctor"), true},  // by role, whatever the condition
		{UserPrincipal("member"), true},  // through a userset
		{ThingPrincipal("thermo-1"), true},
	} {
		if got := e.MayReadAnything(tc.who); got != tc.want {
			t.Errorf("MayReadAnything(%v) = %v, want %v", tc.who, got, tc.want)
		}
	}

	n := e.Changes()
	must(e.PutPolicy("an", Policy{ID: "everyone", Priority: 5, Effect: "allow", Subjects: []string{"*"},
		Resources: []string{"things/thermo-1/data/temperature"}, Actions: []Action{ActRead}}))
	if e.Changes() == n {
		t.Fatal("a policy change did not move Changes")
	}
	if !e.MayReadAnything(UserPrincipal("stranger")) {
		t.Error("a policy for everyone leaves the stranger unable to read anything")
	}
	n = e.Changes()
	e.DeletePolicy("an", "everyone")
	must(e.PutRelationship(Relationship{Thing: "thermo-1", User: "nobody", Relation: RelVisitor, Status: StatusPending}))
	if e.Changes() < n+2 {
		t.Fatal("a delete and a relationship did not move Changes twice")
	}
	if e.MayReadAnything(UserPrincipal("stranger")) || !e.MayReadAnything(UserPrincipal("nobody")) {
		t.Error("after the delete the stranger should read nothing, and a pending visitor something")
	}
}
