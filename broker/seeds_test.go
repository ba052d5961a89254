package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/policies"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "b.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Ids may hold ':': the relation of user "home:ruth" on thing "gate" and
// that of user "ruth" on thing "gate:home" are two seeds, so an unchanged
// file brings back neither after the owner revoked both (joined with ':'
// they shared one key, and each start wrote both again).
func TestSeedKeysOfNamesWithColons(t *testing.T) {
	ctx := context.Background()
	st := emptyStore(t)
	file := writeFile(t, `
users:
  - {name: an, password: an-pass}
  - {name: ruth, password: ruth-pass}
  - {name: "home:ruth", password: hr-pass}
things:
  - {id: gate, owner: an, kind: actuator}
  - {id: "gate:home", owner: an, kind: actuator}
relations:
  - {thing: gate, user: "home:ruth", relation: visitor, valid_until: "2030-01-01T00:00:00Z"}
  - {thing: "gate:home", user: ruth, relation: visitor, valid_until: "2030-01-01T00:00:00Z"}
`)
	apply(t, st, file)
	// An revokes both visitors over MQTT (as the control plane writes it).
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.DeleteRelationship(ctx, "gate", "", "home:ruth", policies.RelVisitor))
	must(st.DeleteRelationship(ctx, "gate:home", "", "ruth", policies.RelVisitor))
	sum := apply(t, st, file) // a restart, the file unchanged
	snap, _ := loadStore(t, st)
	for _, r := range snap.Relationships {
		t.Errorf("a restart with the file unchanged brought back the revoked %s of %q on %s (summary %+v)", r.Relation, r.User, r.Object(), sum)
	}
}

// Changing one field of a thing in the file writes that field only: the
// owner's own change of another (she unlinked the lock from the flat to
// cut off the flat's co-owner) stays, and the operator's new attribute is
// there.
func TestFileEditOfOneFieldKeepsTheOwnersOthers(t *testing.T) {
	ctx := context.Background()
	st := emptyStore(t)
	base := `
users:
  - {name: an, password: an-pass}
  - {name: peter, password: peter-pass}
places:
  - {id: home-an, owner: an}
relations:
  - {place: home-an, user: peter, relation: co_owner}
things:
  - {id: lock-1, owner: an, kind: actuator, place: home-an%s}
`
	apply(t, st, writeFile(t, fmt.Sprintf(base, "")))
	snap, _ := loadStore(t, st)
	var lock policies.Thing
	for _, th := range snap.Things {
		if th.ID == "lock-1" {
			lock = th
		}
	}
	lock.Place = "" // An unlinks her lock from the flat (putThing)
	if err := st.PutThing(ctx, lock, ""); err != nil {
		t.Fatal(err)
	}
	// The operator adds an attribute to the lock in the file.
	apply(t, st, writeFile(t, fmt.Sprintf(base, ", attributes: {vendor: jLock}")))
	snap, _ = loadStore(t, st)
	for _, th := range snap.Things {
		if th.ID == "lock-1" && th.Place != "" {
			t.Errorf("an operator's new attribute relinked An's lock to %q (Peter co-owns it again)", th.Place)
		}
		if th.ID == "lock-1" && th.Attributes["vendor"] != "jLock" {
			t.Errorf("the operator's new attribute was not written: %+v", th.Attributes)
		}
	}
}

// The file's thing secret is the seeded thing's: after the owner deleted
// it and a device enrolled under the same id with a secret of its own, a
// restart with the file unchanged, or with its secret changed, leaves the
// enrolled device's secret (else it was locked out, and whoever had the
// file's secret was the new thing). A changed secret of the seeded thing
// itself is applied.
func TestFileSecretLeavesAReCreatedThingsSecret(t *testing.T) {
	ctx := context.Background()
	st := emptyStore(t)
	file := writeFile(t, `
users:
  - {name: an, password: an-pass}
things:
  - {id: jl-200-0900, owner: an, kind: actuator, secret: old-device-secret}
`)
	apply(t, st, file)
	if err := st.DeleteThing(ctx, "jl-200-0900"); err != nil { // An deletes it
		t.Fatal(err)
	}
	// Serial JL-200-0900 enrols: a new thing, no owner, its own secret.
	h, err := argon2id.CreateHash("enrolled-secret", hashParams)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutThing(ctx, policies.Thing{ID: "jl-200-0900", Kind: "actuator"}, h); err != nil {
		t.Fatal(err)
	}
	apply(t, st, file) // a restart, the file unchanged
	_, creds := loadStore(t, st)
	if ok, _ := argon2id.ComparePasswordAndHash("old-device-secret", creds["thing:jl-200-0900"]); ok {
		t.Error("the unchanged file's secret replaced the enrolled thing's secret")
	}
	rotated := writeFile(t, `
users:
  - {name: an, password: an-pass}
things:
  - {id: jl-200-0900, owner: an, kind: actuator, secret: rotated-device-secret}
`)
	apply(t, st, rotated)
	_, creds = loadStore(t, st)
	if ok, _ := argon2id.ComparePasswordAndHash("enrolled-secret", creds["thing:jl-200-0900"]); !ok {
		t.Error("a changed file secret replaced the enrolled thing's secret")
	}

	// The seeded thing's own secret, changed in the file, is applied.
	st = emptyStore(t)
	apply(t, st, file)
	apply(t, st, rotated)
	_, creds = loadStore(t, st)
	if ok, _ := argon2id.ComparePasswordAndHash("rotated-device-secret", creds["thing:jl-200-0900"]); !ok {
		t.Error("the seeded thing's secret changed in the file was not applied")
	}
}

// An item the owners removed (a revoked relation, a deleted policy, a
// deleted thing) stays removed when the operator then edits it in the file
// (it came back whole, even for an edit that only narrowed it).
func TestRemovedItemStaysRemovedOnFileEdit(t *testing.T) {
	ctx := context.Background()
	st := emptyStore(t)
	base := `
users:
  - {name: an, password: an-pass}
  - {name: peter, password: peter-pass}
  - {name: doctor, password: doc-pass, attributes: {role: doctor}}
things:
  - {id: lock-1, owner: an, kind: actuator, secret: lock-secret, attributes: {vendor: %s}}
relations:
  - {thing: lock-1, user: peter, relation: co_owner, valid_until: "%s"}
policies:
  - owner: an
    id: doctor-lock
    description: %s
    priority: 10
    effect: allow
    subjects: ["role:doctor"]
    resources: ["things/lock-1/state"]
    actions: [read]
`
	apply(t, st, writeFile(t, fmt.Sprintf(base, "jLock", "2030-01-01T00:00:00Z", "doctors see the lock")))
	// An revokes Peter, deletes her policy and deletes the lock (control plane writes).
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.DeleteRelationship(ctx, "lock-1", "", "peter", policies.RelCoOwner))
	must(st.DeletePolicy(ctx, "an", "doctor-lock"))
	must(st.DeleteThing(ctx, "lock-1"))
	// The operator shortens Peter's window, fixes a typo in the vendor and the description.
	sum := apply(t, st, writeFile(t, fmt.Sprintf(base, "jLock GmbH", "2029-01-01T00:00:00Z", "doctors see the lock state")))
	snap, creds := loadStore(t, st)
	for _, r := range snap.Relationships {
		t.Errorf("revoked %s %s on %s is back (status %s) after the file shortened its window (summary %+v)", r.User, r.Relation, r.Object(), r.Status, sum)
	}
	for _, p := range snap.Policies {
		t.Errorf("deleted policy %s/%s is back after a description edit", p.Owner, p.Policy.ID)
	}
	for _, th := range snap.Things {
		t.Errorf("deleted thing %s is back (owner %q, secret stored: %v)", th.ID, th.Owner, creds["thing:"+th.ID] != "")
	}
}

// A file change that meets the owners' own keeps theirs: the owner moved a
// visit to June (re-invited, accepted), the operator then extends the
// January visit in the file; merged field by field the window would end
// before it starts, refused by the store, and the broker would not start.
func TestFileChangeMeetingTheOwnersKeepsTheirs(t *testing.T) {
	ctx := context.Background()
	st := emptyStore(t)
	base := `
users:
  - {name: an, password: an-pass}
  - {name: ruth, password: ruth-pass}
things:
  - {id: lock-1, owner: an, kind: actuator}
relations:
  - {thing: lock-1, user: ruth, relation: visitor, valid_from: "2030-01-01T00:00:00Z", valid_until: "%s"}
`
	apply(t, st, writeFile(t, fmt.Sprintf(base, "2030-01-31T00:00:00Z")))
	// An re-invites Ruth for June; Ruth accepts (the control plane's write).
	if err := st.PutRelationship(ctx, policies.Relationship{Thing: "lock-1", User: "ruth", Relation: policies.RelVisitor, Status: policies.StatusActive,
		ValidFrom: time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC), ValidUntil: time.Date(2030, 6, 30, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	// The operator extends the January visit to February in the file.
	b, err := LoadBootstrap(writeFile(t, fmt.Sprintf(base, "2030-02-28T00:00:00Z")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(ctx, st); err != nil {
		t.Errorf("a valid file no longer applies (the broker does not start): %v", err)
	}
}

// The merge goes into objects: an operator's new attribute (a reworded
// policy) writes that attribute (that description) only, not the file's
// whole map (policy) over the owner's own attribute (coarser constraints).
func TestFileEditInsideAFieldKeepsTheOwnersEdits(t *testing.T) {
	ctx := context.Background()
	st := emptyStore(t)
	base := `
users:
  - {name: an, password: an-pass}
  - {name: doctor, password: doc-pass, attributes: {role: doctor}}
things:
  - {id: watch-1, owner: an, kind: sensor, streams: [location], attributes: {model: W1%s}}
policies:
  - owner: an
    id: doctor-location
    description: %s
    priority: 10
    effect: allow
    subjects: ["role:doctor"]
    resources: ["things/watch-1/data/location"]
    actions: [read, history]
`
	apply(t, st, writeFile(t, fmt.Sprintf(base, "", "doctors see my location")))
	// An, over the control plane: marks the watch private and coarsens the doctors' view to ~10 km.
	snap, _ := loadStore(t, st)
	for _, th := range snap.Things {
		if th.ID == "watch-1" {
			th.Attributes["sharing"] = "private"
			if err := st.PutThing(ctx, th, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range snap.Policies {
		if p.Policy.ID == "doctor-location" {
			p.Policy.Constraints = []policies.Constraint{{Kind: "accuracy", Field: "lat", Step: 0.1}, {Kind: "accuracy", Field: "lon", Step: 0.1}}
			if err := st.PutPolicy(ctx, "an", p.Policy); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The operator adds the vendor to the watch and rewords the description.
	apply(t, st, writeFile(t, fmt.Sprintf(base, ", vendor: Acme", "doctors see where I am")))
	snap, _ = loadStore(t, st)
	for _, th := range snap.Things {
		if th.ID == "watch-1" && th.Attributes["sharing"] != "private" {
			t.Errorf("the operator's new attribute wiped An's attribute: %v", th.Attributes)
		}
	}
	for _, p := range snap.Policies {
		if p.Policy.ID == "doctor-location" && len(p.Policy.Constraints) == 0 {
			t.Errorf("a reworded description in the file dropped An's constraints: doctors see her exact location again")
		}
	}
}

// A secret the operator adds in the file to a thing seeded without one is
// applied (and not counted as kept).
func TestSecretAddedInTheFileIsApplied(t *testing.T) {
	st := emptyStore(t)
	base := `
users:
  - {name: an, password: an-pass}
things:
  - {id: thermo-1, owner: an, kind: sensor%s}
`
	apply(t, st, writeFile(t, fmt.Sprintf(base, "")))
	sum := apply(t, st, writeFile(t, fmt.Sprintf(base, ", secret: thermo-secret")))
	_, creds := loadStore(t, st)
	if ok, _ := argon2id.ComparePasswordAndHash("thermo-secret", creds["thing:thermo-1"]); !ok {
		t.Errorf("the secret the operator added in the file was not applied (stored %q, summary %+v)", creds["thing:thermo-1"], sum)
	}
}

// A seed without its item (the first format of seeds, a digest) is as
// none: the stored item is adopted, and the broker starts.
func TestSeedsWithoutTheirItemAreAdopted(t *testing.T) {
	ctx := context.Background()
	st := emptyStore(t)
	file := writeFile(t, `
users:
  - {name: an, password: an-pass}
things:
  - {id: lock-1, owner: an, kind: actuator}
`)
	apply(t, st, file)
	// As the previous version recorded it (no item).
	if err := st.PutSeed(ctx, mongo.Seed{Key: "thing:lock-1"}); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBootstrap(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(ctx, st); err != nil && strings.Contains(err.Error(), "thing:lock-1") {
		t.Errorf("a store seeded by the previous version fails to start: %v", err)
	}
}

// merge3 writes what the file changed where the stored item still holds
// the seeded value, goes into objects, and reports where both changed.
func TestMerge3(t *testing.T) {
	for _, c := range []struct {
		name, stored, was, now, want string
		conflicts                    int
	}{
		{"file unchanged", `{"a":1,"b":9}`, `{"a":1,"b":2}`, `{"a":1,"b":2}`, `{"a":1,"b":9}`, 0},
		{"owners unchanged", `{"a":1,"b":2}`, `{"a":1,"b":2}`, `{"a":1,"b":3}`, `{"a":1,"b":3}`, 0},
		{"one field each", `{"a":5,"b":2}`, `{"a":1,"b":2}`, `{"a":1,"b":3}`, `{"a":5,"b":3}`, 0},
		{"both changed a field", `{"a":5}`, `{"a":1}`, `{"a":7}`, `{"a":5}`, 1},
		{"added in the file", `{"a":5}`, `{"a":1}`, `{"a":1,"c":[1]}`, `{"a":5,"c":[1]}`, 0},
		{"removed in the file", `{"a":1,"c":2}`, `{"a":1,"c":2}`, `{"a":1}`, `{"a":1}`, 0},
		{"into attributes", `{"attributes":{"x":1,"y":2}}`, `{"attributes":{"x":1}}`, `{"attributes":{"x":1,"z":3}}`, `{"attributes":{"x":1,"y":2,"z":3}}`, 0},
		{"into a policy", `{"policy":{"d":"a","p":5}}`, `{"policy":{"d":"a","p":1}}`, `{"policy":{"d":"b","p":1}}`, `{"policy":{"d":"b","p":5}}`, 0},
		// A condition is one value: merged inside, "lt 12" (the owner's)
		// and "gt 6" (the file's) would make "gt 12", nobody's rule.
		{"not into a condition", `{"policy":{"when":{"op":"lt","v":12}}}`, `{"policy":{"when":{"op":"lt","v":18}}}`,
			`{"policy":{"when":{"op":"gt","v":6}}}`, `{"policy":{"when":{"op":"lt","v":12}}}`, 1},
		{"not into other objects", `{"m":{"x":2}}`, `{"m":{"x":1}}`, `{"m":{"x":1,"z":3}}`, `{"m":{"x":2}}`, 1},
		{"an array is one value", `{"l":[1,2]}`, `{"l":[1]}`, `{"l":[1,3]}`, `{"l":[1,2]}`, 1},
	} {
		var conflicts []string
		got, err := merge3([]byte(c.stored), []byte(c.was), []byte(c.now), "item", &conflicts)
		if err != nil || string(got) != c.want || len(conflicts) != c.conflicts {
			t.Errorf("%s: %s %v, conflicts %q; want %s and %d", c.name, got, err, conflicts, c.want, c.conflicts)
		}
	}
}

// A relation whose window the file gives with a UTC offset is seeded as
// the store keeps it, in UTC: the operator's later shortening of the visit,
// which the owners did not touch, is written, not taken for a conflict
// (the seed said "+01:00" where the store said "Z").
func TestFileTimeWithOffsetIsNoConflict(t *testing.T) {
	st := emptyStore(t)
	base := `
users:
  - {name: an, password: an-pass}
  - {name: ruth, password: ruth-pass}
things:
  - {id: lock-1, owner: an, kind: actuator}
relations:
  - {thing: lock-1, user: ruth, relation: visitor, valid_until: "%s"}
`
	apply(t, st, writeFile(t, fmt.Sprintf(base, "2030-01-31T00:00:00+01:00")))
	// The operator ends Ruth's visit early; nobody changed it over MQTT.
	b, err := LoadBootstrap(writeFile(t, fmt.Sprintf(base, "2030-01-10T00:00:00+01:00")))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := b.Apply(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := loadStore(t, st)
	want := time.Date(2030, 1, 9, 23, 0, 0, 0, time.UTC)
	for _, r := range snap.Relationships {
		if r.User == "ruth" && !r.ValidUntil.Equal(want) {
			t.Errorf("the operator's shortened visit was not written: valid until %s (conflicts %q, summary %+v)", r.ValidUntil, b.Conflicts(), sum)
		}
	}
}

// A condition is one value: the owner narrowed the doctors' hours to the
// morning (hour lt 12), the operator changed the file's "lt 18" to "gt 6";
// merged field by field it would read "hour gt 12", the afternoons the
// owner had just taken away, which neither of them wrote. The owner's
// condition stands, and the conflict is reported.
func TestConditionIsNotMergedInside(t *testing.T) {
	ctx := context.Background()
	st := emptyStore(t)
	base := `
users:
  - {name: an, password: an-pass}
  - {name: doctor, password: doc-pass, attributes: {role: doctor}}
things:
  - {id: watch-1, owner: an, kind: sensor, streams: [location]}
policies:
  - owner: an
    id: doctor-location
    priority: 10
    effect: allow
    subjects: ["role:doctor"]
    resources: ["things/watch-1/data/location"]
    actions: [read]
    when: {attr: env.hour, op: %s, value: %d}
`
	apply(t, st, writeFile(t, fmt.Sprintf(base, "lt", 18)))
	snap, _ := loadStore(t, st)
	for _, p := range snap.Policies {
		if p.Policy.ID == "doctor-location" {
			p.Policy.When.Value = 12.0 // An: mornings only (control plane write)
			if err := st.PutPolicy(ctx, "an", p.Policy); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := LoadBootstrap(writeFile(t, fmt.Sprintf(base, "gt", 6)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(ctx, st); err != nil {
		t.Fatal(err)
	}
	snap, _ = loadStore(t, st)
	for _, p := range snap.Policies {
		if w := p.Policy.When; p.Policy.ID == "doctor-location" && w != nil && w.Op == "gt" && fmt.Sprint(w.Value) == "12" {
			t.Errorf("stored condition %s %s %v: written by neither (owner: lt 12, file: gt 6); conflicts %q", w.Attr, w.Op, w.Value, b.Conflicts())
		}
	}
}

// A thing's owner and place are one value to merge: the owner linked her
// lock to her flat, the operator then gives the lock to Bob in the file.
// Merged apart, Bob's lock would stay in An's flat (An and Peter keeping
// rights on it), which nobody chose; the owners' stand, and the conflict
// is reported.
func TestOwnerAndPlaceMergeTogether(t *testing.T) {
	ctx := context.Background()
	st := emptyStore(t)
	base := `
users:
  - {name: an, password: an-pass}
  - {name: bob, password: bob-pass}
  - {name: peter, password: peter-pass}
places:
  - {id: home-an, owner: an}
relations:
  - {place: home-an, user: peter, relation: co_owner}
things:
  - {id: lock-1, owner: %s, kind: actuator}
`
	apply(t, st, writeFile(t, fmt.Sprintf(base, "an")))
	snap, _ := loadStore(t, st)
	for _, th := range snap.Things {
		if th.ID == "lock-1" {
			th.Place = "home-an" // An links her lock to her flat (putThing)
			if err := st.PutThing(ctx, th, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := LoadBootstrap(writeFile(t, fmt.Sprintf(base, "bob"))) // the operator hands the lock to Bob
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(ctx, st); err != nil {
		t.Fatal(err)
	}
	if c := b.Conflicts(); len(c) != 1 || !strings.Contains(c[0], "owner+place") {
		t.Errorf("conflicts %q, want one on owner+place", c)
	}
	snap, _ = loadStore(t, st)
	for _, th := range snap.Things {
		if th.ID == "lock-1" && th.Owner == "bob" && th.Place == "home-an" {
			t.Errorf("Bob's lock left in An's flat (An and Peter keep rights on it); conflicts %q", b.Conflicts())
		}
		if th.ID == "lock-1" && (th.Owner != "an" || th.Place != "home-an") {
			t.Errorf("lock-1 is %s's in %q; want An's, in her flat, as the owners left it", th.Owner, th.Place)
		}
	}
}
