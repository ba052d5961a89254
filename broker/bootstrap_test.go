package broker

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/ferretdb"
	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/policies"
)

// Tests hash with cheap argon2id parameters; the production ones (64 MiB)
// would make every bootstrap in this test binary take seconds. This also
// speeds up the broker started by the end-to-end tests' TestMain.
func init() {
	hashParams = &argon2id.Params{Memory: 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}
}

const exampleFile = "../examples/bootstrap.yaml"

// emptyStore starts an embedded FerretDB in a fresh directory and opens the
// metadata store on it.
func emptyStore(t *testing.T) *mongo.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := ferretdb.Start(ctx, t.TempDir(), zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatalf("ferretdb: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	st, err := mongo.Open(ctx, srv.URI(), "veil")
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	return st
}

func loadStore(t *testing.T, st *mongo.Store) (policies.Snapshot, mongo.Credentials) {
	t.Helper()
	snap, creds, err := st.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return snap, creds
}

func apply(t *testing.T, st *mongo.Store, path string) Summary {
	t.Helper()
	b, err := LoadBootstrap(path)
	if err != nil {
		t.Fatalf("LoadBootstrap: %v", err)
	}
	sum, err := b.Apply(context.Background(), st)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return sum
}

func TestBootstrapExample(t *testing.T) {
	t.Parallel()
	st := emptyStore(t)
	sum := apply(t, st, exampleFile)
	want := Summary{Users: 7, Things: 3, Places: 1, Relationships: 3, Memberships: 1, Policies: 3, Factory: 2, Hashed: 12}
	if sum != want {
		t.Fatalf("summary %+v, want %+v", sum, want)
	}

	snap, creds := loadStore(t, st)
	if len(snap.Users) != 7 || len(snap.Things) != 3 || len(snap.Places) != 1 || len(snap.Relationships) != 3 ||
		len(snap.Memberships) != 1 || len(snap.Policies) != 3 || len(creds) != 10 {
		t.Fatalf("loaded %d users, %d things, %d places, %d relationships, %d memberships, %d policies, %d credentials",
			len(snap.Users), len(snap.Things), len(snap.Places), len(snap.Relationships), len(snap.Memberships), len(snap.Policies), len(creds))
	}
	for _, p := range [][2]string{{"user:an", "an-secret"}, {"user:admin", "admin-secret"}, {"thing:lock-1", "lock-1-secret"}} {
		ok, err := argon2id.ComparePasswordAndHash(p[1], creds[p[0]])
		if err != nil || !ok {
			t.Fatalf("%s: stored hash does not match the example password (%v)", p[0], err)
		}
	}
	for _, h := range creds {
		if !strings.HasPrefix(h, "$argon2id$") {
			t.Fatalf("not an argon2id hash: %.12s…", h)
		}
	}

	users := map[string]policies.User{}
	for _, u := range snap.Users {
		users[u.Name] = u
	}
	if !users["admin"].Admin || users["an"].Admin {
		t.Fatalf("admin flags: %+v", snap.Users)
	}
	if users["patrick"].Attributes["certified_installer"] != true || users["doctor"].Attributes["role"] != "doctor" {
		t.Fatalf("attributes: %+v %+v", users["patrick"], users["doctor"])
	}
	lock := snap.Things[0]
	if lock.ID != "lock-1" || lock.Kind != "actuator" || lock.Owner != "an" || lock.Place != "home-an" || lock.Streams != nil {
		t.Fatalf("lock-1: %+v", lock)
	}
	var ruth policies.Relationship
	for _, r := range snap.Relationships {
		if r.User == "ruth" {
			ruth = r
		}
	}
	if ruth.Thing != "lock-1" || ruth.Relation != policies.RelVisitor || ruth.Status != policies.StatusActive ||
		!ruth.ValidFrom.Equal(time.Date(2026, 1, 1, 18, 0, 0, 0, time.UTC)) || !ruth.ValidUntil.Equal(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)) {
		t.Fatalf("ruth: %+v", ruth)
	}
	ids := []string{}
	for _, p := range snap.Policies {
		if p.Owner != "an" {
			t.Fatalf("policy owner %q", p.Owner)
		}
		ids = append(ids, p.Policy.ID)
	}
	if !reflect.DeepEqual(ids, []string{"doctor-heart-rate", "doctor-location", "doctor-thermo"}) {
		t.Fatalf("policies %v", ids)
	}

	// The engine takes the snapshot, and the example means what it says.
	e := policies.NewEngine(policies.Options{})
	if err := e.Load(snap); err != nil {
		t.Fatalf("engine: %v", err)
	}
	d := e.Decide(policies.Request{Principal: policies.UserPrincipal("doctor"), Topic: "things/watch-1/data/location", Action: policies.ActRead, Purpose: "diagnosis"})
	if !d.Allowed() || d.PolicyID != "doctor-location" || !d.Constrained() {
		t.Fatalf("doctor reading the location: %+v", d)
	}
	if d := e.Decide(policies.Request{Principal: policies.UserPrincipal("stranger"), Topic: "things/watch-1/data/location", Action: policies.ActRead, Purpose: "diagnosis"}); d.Allowed() {
		t.Fatalf("stranger reading the location: %+v", d)
	}

	b, err := LoadBootstrap(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Factory) != 2 || b.Factory[0] != (BootstrapFactory{Serial: "JL-200-0001", Secret: "factory-secret-0001", Model: "JL-200", Vendor: "jLock"}) {
		t.Fatalf("factory: %+v", b.Factory)
	}
}

func TestBootstrapIdempotent(t *testing.T) {
	t.Parallel()
	st := emptyStore(t)
	first := apply(t, st, exampleFile)
	snap1, creds1 := loadStore(t, st)

	second := apply(t, st, exampleFile)
	if second.Hashed != 0 || second.Kept != first.Hashed {
		t.Fatalf("second apply hashed %d, kept %d; want 0 and %d", second.Hashed, second.Kept, first.Hashed)
	}
	snap2, creds2 := loadStore(t, st)
	if !reflect.DeepEqual(snap1, snap2) {
		t.Fatalf("state changed on the second apply:\n%+v\n%+v", snap1, snap2)
	}
	if !reflect.DeepEqual(creds1, creds2) {
		t.Fatal("hashes changed on the second apply")
	}

	// A changed password is hashed again; the others are kept.
	b, err := LoadBootstrap(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	b.Users[0].Password = "an-new-secret"
	sum, err := b.Apply(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Hashed != 1 || sum.Kept != first.Hashed-1 {
		t.Fatalf("after a password change: %+v", sum)
	}
	_, creds3 := loadStore(t, st)
	if ok, _ := argon2id.ComparePasswordAndHash("an-new-secret", creds3["user:an"]); !ok {
		t.Fatal("new password not stored")
	}
	if creds3["user:ruth"] != creds1["user:ruth"] {
		t.Fatal("an unchanged password was re-hashed")
	}

	// A hash made with other parameters is replaced, even if it matches.
	// (On this Bootstrap only: the other tests apply theirs in parallel.)
	b.params = &argon2id.Params{Memory: 2048, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}
	sum, err = b.Apply(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Hashed != first.Hashed || sum.Kept != 0 {
		t.Fatalf("after a parameter change: %+v", sum)
	}
}

func TestBootstrapInvalidWritesNothing(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ file, want string }{
		{"unknown-key.yaml", `users[1].pasword: unknown field (want name, password, attributes, admin) (line 5)`},
		{"bad-policy.yaml", `policies[0].constraints[0].step: must be > 0 (line 16)`},
		{"unknown-thing.yaml", `relations[1].thing: unknown thing "lock-9" (line 9)`},
		{"missing-password.yaml", `users[2].password: must not be empty (line 5)`},
	} {
		t.Run(c.file, func(t *testing.T) {
			t.Parallel()
			st := emptyStore(t)
			path := filepath.Join("testdata", "bootstrap", c.file)
			b, err := LoadBootstrap(path)
			if err == nil {
				_, err = b.Apply(context.Background(), st)
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, c.want)
			}
			snap, creds := loadStore(t, st)
			if !reflect.DeepEqual(snap, policies.Snapshot{}) || len(creds) != 0 {
				t.Fatalf("something was written: %+v, %d credentials", snap, len(creds))
			}
		})
	}
}

func TestBootstrapReferencesStoredItems(t *testing.T) {
	t.Parallel()
	st := emptyStore(t)
	apply(t, st, exampleFile)
	// A later file may refer to what is already stored.
	path := filepath.Join(t.TempDir(), "more.yaml")
	doc := `
places:
  - {id: kitchen, owner: peter, parent: home-an}
things:
  - {id: lamp-1, owner: an, kind: actuator, place: kitchen}
relations:
  - {thing: lamp-1, user: ruth, relation: visitor, status: pending}
memberships:
  - {group: "org:clinic", relation: member, member: "user:stranger"}
policies:
  - {owner: peter, id: p1, priority: 1, effect: deny, subjects: ["*"], resources: ["stream:location"], actions: [read]}
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := apply(t, st, path)
	if sum.Places != 1 || sum.Things != 1 || sum.Relationships != 1 || sum.Memberships != 1 || sum.Policies != 1 || sum.Hashed != 0 {
		t.Fatalf("summary %+v", sum)
	}
	snap, creds := loadStore(t, st)
	if len(snap.Things) != 4 || len(snap.Places) != 2 || len(snap.Policies) != 4 || len(creds) != 10 {
		t.Fatalf("after the second file: %d things, %d places, %d policies, %d credentials", len(snap.Things), len(snap.Places), len(snap.Policies), len(creds))
	}

	// A place may not end up inside itself, even through stored places.
	if err := os.WriteFile(path, []byte("places:\n  - {id: home-an, owner: an, parent: kitchen}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBootstrap(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(context.Background(), st); err == nil || !strings.Contains(err.Error(), `places[0].parent: place "home-an" would contain itself (line 2)`) {
		t.Fatalf("cycle: %v", err)
	}
}

func TestParseBootstrapErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, doc string
		want      []string
	}{
		{"unknown section", "user:\n  - {name: an}\n", []string{`user: unknown section (want users, things, places, relations, memberships, policies, factory) (line 1)`}},
		{"section not a list", "users: {name: an}\n", []string{"users: must be a list (line 1)"}},
		{"item not a mapping", "things:\n  - lock-1\n", []string{"things[0]: must be a mapping (line 2)"}},
		{"wrong type", "things:\n  - {id: t, streams: temperature}\n", []string{"line 2: cannot unmarshal !!str `tempera...` into []string"}},
		{"duplicate key", "users:\n  - {name: an, password: a, password: b}\n", []string{`mapping key "password" already defined`}},
		{"everything at once", `
users:
  - {name: "a/b", password: x}
  - {name: an, password: x, attributes: {tags: [a, b]}}
  - {name: an, password: y}
things:
  - {id: t1, kind: robot, streams: [a, a, "x y"]}
relations:
  - {thing: t1, place: p, user: an, relation: friend, status: maybe, valid_from: tomorrow}
  - {thing: t1, user: an, relation: visitor, valid_from: "2026-02-01T00:00:00Z", valid_until: "2026-01-01T00:00:00Z"}
memberships:
  - {group: acme, relation: member, member: ruth}
policies:
  - {id: p, priority: 1, effect: allow, subjects: ["*"], resources: ["stream:x"], actions: [read]}
  - {owner: an, id: q, priority: 1.5, effect: allow, subjects: ["*"], resources: ["stream:x"], actions: [read], when: {attr: env.hour, op: between, value: [8, .inf]}}
factory:
  - {serial: s1}
`, []string{
			`users[0].name: must not contain '/', '+', '#', NUL or whitespace (line 3)`,
			`users[1].attributes.tags: must be a string, number or boolean (line 4)`,
			`users[2].name: duplicate user "an" (line 5)`,
			`things[0].kind: unknown kind "robot" (want sensor, actuator or gateway) (line 7)`,
			`things[0].streams[1]: duplicate stream "a" (line 7)`,
			`things[0].streams[2]: must not contain '/', '+', '#', NUL or whitespace (line 7)`,
			`relations[0].valid_from: not an RFC 3339 time (line 9)`,
			`relations[0].place: only one of thing or place may be set (line 9)`,
			`relations[0].relation: unknown relation "friend"`,
			`relations[0].status: unknown status "maybe"`,
			`relations[1].valid_until: must not be before valid_from (line 10)`,
			`memberships[0].group: must be kind:id, like org:acme (got "acme") (line 12)`,
			`memberships[0].member: must be kind:id or kind:id#relation, like user:ruth (got "ruth") (line 12)`,
			`policies[0].owner: must not be empty (line 14)`,
			`policies[1]: when: line 15: .inf is not a finite number (line 15)`,
			`factory[0].secret: must not be empty (line 17)`,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseBootstrap([]byte(c.doc))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%s", w, strings.ReplaceAll(err.Error(), "; ", "\n"))
				}
			}
		})
	}
}

func TestParseBootstrapYAMLToPolicy(t *testing.T) {
	t.Parallel()
	// YAML spellings arrive as the JSON ParsePolicy expects: integers stay
	// integers (priority must be one), floats stay floats, quoted and
	// unquoted strings alike, anchors resolved.
	doc := `
users:
  - {name: an, password: x}
policies:
  - owner: an
    id: p
    priority: 0x10
    effect: allow
    subjects: &subj ["role:doctor", 'user:ruth']
    resources: [things/+/data/location]
    actions: [read]
    when:
      any:
        - {attr: requester.certified_installer, op: eq, value: true}
        - {attr: env.hour, op: between, value: [8, 18]}
        - {attr: thing.battery, op: lt, value: 0.25}
    constraints:
      - {kind: range, field: bpm, min: -1.5e1, max: 200}
`
	b, err := ParseBootstrap([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	pl, probs := b.check(nil)
	if len(probs) > 0 {
		t.Fatal(probs.Err())
	}
	p := pl.pols[0].Policy
	if p.Priority != 16 || !reflect.DeepEqual(p.Subjects, []string{"role:doctor", "user:ruth"}) || len(p.When.Any) != 3 ||
		p.When.Any[2].Value != 0.25 || *p.Constraints[0].Min != -15 {
		t.Fatalf("policy %+v", p)
	}
}

func TestParseBootstrapEmpty(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{"", "# nothing\n", "users:\n"} {
		b, err := ParseBootstrap([]byte(doc))
		if err != nil || len(b.Users) != 0 {
			t.Fatalf("%q: %v", doc, err)
		}
	}
}

// Things, relations and policies are the owners' once seeded: applying
// the file again leaves what the control plane changed or deleted, writes
// what changed in the file, keeps an item already stored that the file
// names for the first time, and applies a changed thing secret to a thing
// that exists only.
func TestBootstrapSeedsWhatOwnersEdit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := emptyStore(t)
	apply(t, st, exampleFile)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// What owners do over MQTT, as the control plane writes it.
	must(st.DeletePolicy(ctx, "an", "doctor-thermo"))
	must(st.DeleteRelationship(ctx, "lock-1", "", "ruth", policies.RelVisitor))
	snap, _ := loadStore(t, st)
	var thermo policies.Thing
	for _, th := range snap.Things {
		if th.ID == "thermo-1" {
			thermo = th
		}
	}
	thermo.Attributes = policies.Attributes{"room": "attic"}
	must(st.PutThing(ctx, thermo, ""))
	must(st.DeleteThing(ctx, "watch-1"))
	// A policy made over MQTT that a later file also names.
	mine := policies.Policy{ID: "mine", Priority: 1, Effect: "deny", Subjects: []string{"*"}, Resources: []string{"stream:location"}, Actions: []policies.Action{policies.ActRead}}
	must(st.PutPolicy(ctx, "an", mine))

	b, err := LoadBootstrap(exampleFile)
	must(err)
	for i := range b.Things {
		if b.Things[i].ID == "watch-1" {
			b.Things[i].Secret = "watch-1-rotated"
		}
		if b.Things[i].ID == "lock-1" {
			b.Things[i].Secret = "lock-1-rotated"
		}
	}
	b.Policies = append(b.Policies, BootstrapPolicy{Owner: "an", Document: json.RawMessage(
		`{"id":"mine","priority":99,"effect":"deny","subjects":["*"],"resources":["stream:location"],"actions":["read"]}`)})
	sum, err := b.Apply(ctx, st)
	must(err)
	if sum.Things != 0 || sum.Relationships != 0 || sum.Policies != 0 {
		t.Errorf("unchanged items written again: %+v", sum)
	}

	snap, creds := loadStore(t, st)
	for _, p := range snap.Policies {
		switch {
		case p.Policy.ID == "doctor-thermo":
			t.Error("a policy the owner deleted is back")
		case p.Policy.ID == "mine" && p.Policy.Priority != 1:
			t.Errorf("a policy stored before the file named it was overwritten: priority %d", p.Policy.Priority)
		}
	}
	for _, r := range snap.Relationships {
		if r.User == "ruth" {
			t.Error("a relation the owner revoked is back")
		}
	}
	for _, th := range snap.Things {
		if th.ID == "watch-1" {
			t.Error("a thing the owner deleted is back")
		}
		if th.ID == "thermo-1" && th.Attributes["room"] != "attic" {
			t.Errorf("the owner's change to thermo-1 was overwritten: %+v", th.Attributes)
		}
	}
	if _, ok := creds["thing:watch-1"]; ok {
		t.Error("the deleted thing's rotated secret was stored")
	}
	if ok, _ := argon2id.ComparePasswordAndHash("lock-1-rotated", creds["thing:lock-1"]); !ok {
		t.Error("lock-1's rotated secret was not applied")
	}

	// A change in the file is written where the owners left the item as
	// seeded (Peter's co-ownership of the flat gets an end), not where
	// they revoked it (Ruth's visit stays revoked).
	for i := range b.Relations {
		switch b.Relations[i].User {
		case "ruth":
			b.Relations[i].ValidUntil = "2027-01-31T23:00:00Z"
		case "peter":
			b.Relations[i].ValidUntil = "2027-06-30T00:00:00Z"
		}
	}
	sum, err = b.Apply(ctx, st)
	must(err)
	if sum.Relationships != 1 || sum.Conflicts != 1 || len(b.Conflicts()) != 1 || !strings.Contains(b.Conflicts()[0], `"ruth"`) {
		t.Fatalf("relations changed in the file: %+v, conflicts %q", sum, b.Conflicts())
	}
	snap, _ = loadStore(t, st)
	found := false
	for _, r := range snap.Relationships {
		if r.User == "ruth" {
			t.Error("a relation the owner revoked came back with its change in the file")
		}
		found = found || r.User == "peter" && r.ValidUntil.Equal(time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC))
	}
	if !found {
		t.Error("the relation changed in the file was not written")
	}
}
