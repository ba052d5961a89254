package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/alexedwards/argon2id"

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
