package policies

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"
)

// maxDeps is how many generations one cached decision may depend on
// (principal, thing owner, co-owners); a decision needing more is not cached.
const maxDeps = 4

type cacheKey struct {
	p       Principal
	topic   string
	action  Action
	purpose string
}

type cacheEntry struct {
	key    cacheKey
	d      Decision
	global uint64
	deps   [maxDeps]depRef
	ndeps  int
}

type depRef struct {
	g *generation
	n uint64
}

// decisionCache remembers decisions with the generations they were computed
// at. An entry is served only while every generation is unchanged and its
// expiry (a time-window boundary) has not passed, so it never serves a
// stale answer; changes need not find the entries they invalidate.
//
// It is a direct-mapped table of immutable entries behind atomic pointers:
// a hit takes no lock (deliveries are decided concurrently in every
// publisher's goroutine), and a collision simply replaces the older entry.
type decisionCache struct {
	seed   maphash.Seed
	mask   uint64
	slots  []atomic.Pointer[cacheEntry]
	global *generation
}

func newDecisionCache(entries int, global *generation) *decisionCache {
	if entries <= 0 {
		entries = 1 << 18
	}
	n := 1 << bits.Len(uint(entries-1)) // a power of two ≥ entries
	return &decisionCache{seed: maphash.MakeSeed(), mask: uint64(n - 1), slots: make([]atomic.Pointer[cacheEntry], n), global: global}
}

func (c *decisionCache) slot(k *cacheKey) *atomic.Pointer[cacheEntry] {
	h := maphash.String(c.seed, k.topic) ^ bits.RotateLeft64(maphash.String(c.seed, k.p.ID), 23) ^ uint64(k.p.Kind)<<56
	if k.purpose != "" {
		h ^= bits.RotateLeft64(maphash.String(c.seed, k.purpose), 41)
	}
	h ^= uint64(len(k.action)) * 0x9e3779b97f4a7c15 // a cheap spread; the full key is compared on every hit
	return &c.slots[h&c.mask]
}

// get returns the live entry for k, or nil.
func (c *decisionCache) get(k *cacheKey, clock Clock) *cacheEntry {
	e := c.slot(k).Load()
	if e == nil || e.key != *k || e.global != c.global.n.Load() {
		return nil
	}
	for i := 0; i < e.ndeps; i++ {
		if e.deps[i].g.n.Load() != e.deps[i].n {
			return nil
		}
	}
	if !e.d.Expires.IsZero() && !clock.Now().Before(e.d.Expires) {
		return nil
	}
	return e
}

// put stores d computed at global generation gl. The generations in deps
// were read during the evaluation, under the engine's read lock, so a change
// that raced with it has bumped one of them and the entry is born stale.
func (c *decisionCache) put(k *cacheKey, d Decision, gl uint64, deps []depRef) {
	e := &cacheEntry{key: *k, d: d, global: gl, ndeps: len(deps)}
	copy(e.deps[:], deps)
	c.slot(k).Store(e)
}
