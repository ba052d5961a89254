package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/alexedwards/argon2id"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/policies"
)

// Seeding: the bootstrap file's things, relations and policies are the
// owners' once written (Bootstrap.Apply). Each is recorded as the file gave
// it (a mongo.Seed); at a later start only what changed in the file since
// is written again, field by field, over what the control plane made of it.

// seeding is what Apply does with one thing, relation or policy of the file.
type seeding struct {
	seed   mongo.Seed  // as the file gives the item now
	prev   *mongo.Seed // as it gave it when last seeded; nil: never
	stored bool        // the store holds the item
	// write is the item to write (JSON of its type); nil: none.
	write []byte
	// fresh says the seed is to be recorded (the item changed, was adopted,
	// or its secret's hash changed).
	fresh bool
	// conflicts names what the file changed where the owners had changed
	// it too, and which stays as the owners left it.
	conflicts []string
}

// seedingOf decides for item under key, given the seeds recorded and the
// items stored (JSON, by key), with valid checking a merged item:
//   - unchanged in the file since it was seeded: left as stored, or as
//     deleted;
//   - named by the file for the first time and already stored (made through
//     the control plane, or by a Veil that re-applied the file at every
//     start): adopted as stored;
//   - changed in the file: what the file changed is written where the
//     owners left the seeded value, field by field and into objects (an
//     operator's new attribute does not relink the thing, nor drop the
//     owner's own attribute); where the owners changed it too, or deleted
//     the item, theirs stands (reported as a conflict);
//   - new: written whole.
func seedingOf(seeds map[string]mongo.Seed, stored map[string][]byte, key string, item any, kind itemKind) (seeding, error) {
	j, err := json.Marshal(item)
	if err != nil {
		return seeding{}, fmt.Errorf("%s: %w", key, err)
	}
	sd := seeding{seed: mongo.Seed{Key: key, Item: string(j)}}
	cur, isStored := stored[key]
	sd.stored = isStored
	// A seed without its item (an earlier format) is as none: adopted.
	if prev, ok := seeds[key]; ok && prev.Item != "" {
		sd.prev = &prev
		sd.seed.SecretHash = prev.SecretHash
	}
	switch {
	case sd.prev != nil && sd.prev.Item == sd.seed.Item:
	case sd.prev == nil && isStored:
		sd.fresh = true
	case sd.prev != nil && !isStored:
		sd.fresh = true
		sd.conflicts = append(sd.conflicts, key+": changed in the file, deleted by its owners: stays deleted")
	case sd.prev != nil:
		sd.fresh = true
		merged, err := kind.merge(cur, []byte(sd.prev.Item), j, key, &sd.conflicts)
		if err != nil {
			return seeding{}, fmt.Errorf("%s: %w", key, err)
		}
		switch {
		case bytes.Equal(merged, cur):
		case kind.valid(merged) != nil:
			// Not seeded: the file's change is tried again at the next
			// start (and reported again) until one of them is changed.
			sd.fresh = false
			sd.conflicts = append(sd.conflicts, fmt.Sprintf("%s: the file's change does not fit the owners' (%v): stays as stored", key, kind.valid(merged)))
		default:
			sd.write = merged
		}
	default:
		sd.write, sd.fresh = j, true
	}
	return sd, nil
}

// merge3 returns stored with what the file changed from was to now (each
// canonical JSON, nil: absent), where stored still holds what was there;
// into the item's fields, a policy's fields and attributes key by key;
// elsewhere stored stands, and path is reported. A condition (`when`), a
// list, a constraint are one value each: merged inside, they would make a
// rule neither the file nor the owners wrote.
func merge3(stored, was, now []byte, path string, conflicts *[]string) ([]byte, error) {
	return merge3At(stored, was, now, path, 0, conflicts)
}

// merge3At is merge3 at depth (0: the item; 1: its policy or attributes,
// the only deeper objects merged key by key).
func merge3At(stored, was, now []byte, path string, depth int, conflicts *[]string) ([]byte, error) {
	switch {
	case bytes.Equal(was, now):
		return stored, nil
	case bytes.Equal(stored, was):
		return now, nil
	}
	var s, w, n map[string]json.RawMessage
	if depth <= 1 && isObject(stored) && isObject(was) && isObject(now) {
		for _, x := range []struct {
			b []byte
			m *map[string]json.RawMessage
		}{{stored, &s}, {was, &w}, {now, &n}} {
			if err := json.Unmarshal(x.b, x.m); err != nil {
				return nil, err
			}
		}
		keys := map[string]bool{}
		for _, m := range []map[string]json.RawMessage{s, w, n} {
			for k := range m {
				keys[k] = true
			}
		}
		for k := range keys {
			// Under the item: its fields; under its policy or attributes:
			// theirs; nothing deeper.
			next := 2
			if depth == 0 && (k == "policy" || k == "attributes") {
				next = 1
			}
			v, err := merge3At(s[k], w[k], n[k], path+"."+k, next, conflicts)
			if err != nil {
				return nil, err
			}
			if v == nil {
				delete(s, k)
			} else {
				s[k] = v
			}
		}
		return json.Marshal(s)
	}
	*conflicts = append(*conflicts, path+": changed in the file and by its owners: theirs stands")
	return stored, nil
}

func isObject(b []byte) bool { return len(b) > 0 && b[0] == '{' }

// itemKind is how seedingOf merges and checks one kind of item.
type itemKind struct {
	valid func([]byte) error
	// together are fields that are one value to merge: a thing's owner and
	// place (a new owner in the old owner's flat is nobody's choice: the
	// flat's co-owners would keep rights on the new owner's thing).
	together []string
}

var (
	thingKind    = itemKind{valid: validThing, together: []string{"owner", "place"}}
	relationKind = itemKind{valid: validRelation}
	policyKind   = itemKind{valid: validPolicy}
)

// merge is merge3 with the fields that go together as one value.
func (k itemKind) merge(stored, was, now []byte, path string, conflicts *[]string) ([]byte, error) {
	if len(k.together) == 0 {
		return merge3(stored, was, now, path, conflicts)
	}
	var err error
	packed := make([][]byte, 3)
	for i, b := range [][]byte{stored, was, now} {
		if packed[i], err = k.pack(b); err != nil {
			return nil, err
		}
	}
	merged, err := merge3(packed[0], packed[1], packed[2], path, conflicts)
	if err != nil {
		return nil, err
	}
	return k.unpack(merged)
}

// togetherKey holds the fields of together as one array while merging
// ("owner+place", which no item has for a field).
func (k itemKind) togetherKey() string { return strings.Join(k.together, "+") }

func (k itemKind) pack(b []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	vals := make([]json.RawMessage, len(k.together))
	for i, f := range k.together {
		if vals[i] = m[f]; vals[i] == nil {
			vals[i] = json.RawMessage("null")
		}
		delete(m, f)
	}
	j, err := json.Marshal(vals)
	if err != nil {
		return nil, err
	}
	m[k.togetherKey()] = j
	return json.Marshal(m)
}

func (k itemKind) unpack(b []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	var vals []json.RawMessage
	if err := json.Unmarshal(m[k.togetherKey()], &vals); err != nil {
		return nil, err
	}
	delete(m, k.togetherKey())
	for i, f := range k.together {
		if i < len(vals) && string(vals[i]) != "null" {
			m[f] = vals[i]
		}
	}
	return json.Marshal(m)
}

// Checks of a merged item (the file's items are checked as a whole file).
func validThing(b []byte) error {
	var th policies.Thing
	return json.Unmarshal(b, &th)
}

func validRelation(b []byte) error {
	var r policies.Relationship
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	return r.Validate()
}

func validPolicy(b []byte) error {
	var p struct {
		Policy json.RawMessage `json:"policy"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	_, err := policies.ParsePolicy(p.Policy)
	return err
}

// thingSecret decides about a thing's secret from the file, plain, given
// the stored hash: out gets a new hash to write ("" keeps the stored one),
// and the seed the hash of the secret as the file gave it. A secret is the
// control plane's once seeded too: the file's replaces the stored one only
// where the thing is written whole, where it is the same secret hashed
// with other parameters, or where the file changed it and the stored hash
// is still the one the file seeded (not a thing enrolled afresh under the
// id after the seeded one was deleted).
func (sd *seeding) thingSecret(plain, storedHash string, params *argon2id.Params, out *string) (hashed, kept bool, err error) {
	seeded := ""
	if sd.prev != nil {
		seeded = sd.prev.SecretHash
	}
	rehash := false
	switch {
	case sd.write != nil && !sd.stored:
		rehash = !current(plain, storedHash, params)
	case !sd.stored:
		return false, false, nil // deleted by its owners: no secret either
	case matches(plain, storedHash):
		rehash = !current(plain, storedHash, params)
	case sd.prev != nil && storedHash == seeded:
		rehash = true // changed (or given) in the file
	default:
		return false, storedHash != "", nil // another thing's secret now
	}
	h := storedHash
	if rehash {
		if h, err = argon2id.CreateHash(plain, params); err != nil {
			return false, false, err
		}
		*out = h
	}
	if h != seeded {
		sd.seed.SecretHash, sd.fresh = h, true
	}
	return rehash, !rehash, nil
}

// matches reports whether hash is an argon2id hash of plain, whatever its
// parameters.
func matches(plain, hash string) bool {
	if hash == "" {
		return false
	}
	ok, err := argon2id.ComparePasswordAndHash(plain, hash)
	return err == nil && ok
}

// record stores the seed, after the item: a failure in between leaves an
// item stored and not seeded, which the next start adopts as it is.
func (sd *seeding) record(ctx context.Context, st *mongo.Store) error {
	if !sd.fresh {
		return nil
	}
	return st.PutSeed(ctx, sd.seed)
}

// Seed keys. Names may hold ':', so the parts are a JSON array: thing
// "gate" and user "home:ruth" must not meet thing "gate:home" and user
// "ruth".
func thingKey(id string) string { return "thing:" + id }

func relationKey(r policies.Relationship) string {
	return "relation:" + tuple(r.Object(), r.User, string(r.Relation))
}

func policyKey(owner, id string) string { return "policy:" + tuple(owner, id) }

func tuple(parts ...string) string {
	j, _ := json.Marshal(parts) // strings always encode
	return string(j)
}

// storedItems returns the things, relations and policies of snap as JSON,
// by seed key.
func storedItems(snap *policies.Snapshot) (map[string][]byte, error) {
	items := make(map[string][]byte, len(snap.Things)+len(snap.Relationships)+len(snap.Policies))
	put := func(key string, item any) error {
		j, err := json.Marshal(item)
		items[key] = j
		return err
	}
	for _, t := range snap.Things {
		if err := put(thingKey(t.ID), t); err != nil {
			return nil, err
		}
	}
	for _, r := range snap.Relationships {
		if err := put(relationKey(r), r); err != nil {
			return nil, err
		}
	}
	for _, p := range snap.Policies {
		if err := put(policyKey(p.Owner, p.Policy.ID), p); err != nil {
			return nil, err
		}
	}
	return items, nil
}
