package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

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
}

// seedingOf decides for item under key, given the seeds recorded and the
// items stored (JSON, by key):
//   - unchanged in the file since it was seeded: left as stored, or as
//     deleted;
//   - named by the file for the first time and already stored (made through
//     the control plane, or by a Veil that re-applied the file at every
//     start): adopted as stored;
//   - changed in the file and stored: the fields the file changed are
//     written over the stored item, the others stay as the control plane
//     left them (an operator's new attribute does not relink the thing);
//   - otherwise (new, or changed and no longer stored): written whole.
func seedingOf(seeds map[string]mongo.Seed, stored map[string][]byte, key string, item any) (seeding, error) {
	j, err := json.Marshal(item)
	if err != nil {
		return seeding{}, fmt.Errorf("%s: %w", key, err)
	}
	sd := seeding{seed: mongo.Seed{Key: key, Item: string(j)}}
	cur, isStored := stored[key]
	sd.stored = isStored
	if prev, ok := seeds[key]; ok {
		sd.prev = &prev
		sd.seed.SecretHash = prev.SecretHash
	}
	switch {
	case sd.prev != nil && sd.prev.Item == sd.seed.Item:
	case sd.prev == nil && isStored:
		sd.fresh = true
	case sd.prev != nil && isStored:
		if sd.write, err = mergeChanged(cur, []byte(sd.prev.Item), j); err != nil {
			return seeding{}, fmt.Errorf("%s: %w", key, err)
		}
		sd.fresh = true
	default:
		sd.write, sd.fresh = j, true
	}
	return sd, nil
}

// mergeChanged returns stored with the top-level fields that differ
// between was and now set as in now (or removed, where now has none).
func mergeChanged(stored, was, now []byte) ([]byte, error) {
	var s, w, n map[string]json.RawMessage
	for _, x := range []struct {
		b []byte
		m *map[string]json.RawMessage
	}{{stored, &s}, {was, &w}, {now, &n}} {
		if err := json.Unmarshal(x.b, x.m); err != nil {
			return nil, err
		}
	}
	if s == nil {
		s = map[string]json.RawMessage{}
	}
	for k, v := range n {
		if !bytes.Equal(w[k], v) {
			s[k] = v
		}
	}
	for k := range w {
		if _, ok := n[k]; !ok {
			delete(s, k)
		}
	}
	return json.Marshal(s)
}

// thingSecret decides about a thing's secret from the file, plain, given
// the stored hash: out gets a new hash to write ("" keeps the stored one),
// and the seed the hash of the secret as the file gave it. A secret is the
// control plane's once seeded too: the file's replaces the stored one only
// where the thing is written whole, where it is the same secret hashed
// with other parameters, or where the file changed it and the stored hash
// is still the one the file seeded (not a thing enrolled afresh under the
// id after the seeded one was deleted).
func (sd *seeding) thingSecret(plain, storedHash string, params *argon2id.Params, out *string) (hashed bool, err error) {
	seeded := ""
	if sd.prev != nil {
		seeded = sd.prev.SecretHash
	}
	rehash := false
	switch {
	case sd.write != nil && !sd.stored:
		rehash = !current(plain, storedHash, params)
	case !sd.stored:
		return false, nil // deleted by its owners: no secret either
	case matches(plain, storedHash):
		rehash = !current(plain, storedHash, params)
	case seeded != "" && storedHash == seeded:
		rehash = true // changed in the file
	default:
		return false, nil // another thing's secret now
	}
	h := storedHash
	if rehash {
		if h, err = argon2id.CreateHash(plain, params); err != nil {
			return false, err
		}
		*out = h
	}
	if h != seeded {
		sd.seed.SecretHash, sd.fresh = h, true
	}
	return rehash, nil
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
