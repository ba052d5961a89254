package policies

import (
	"hash/maphash"
	"sync"
)

// maxDeps is how many generations one cached decision may depend on
// (principal, thing owner, co-owners); a decision needing more is not cached.
const maxDeps = 4

const cacheShards = 32

type cacheKey struct {
	p       Principal
	topic   string
	action  Action
	purpose string
}

type cacheEntry struct {
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
type decisionCache struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]cacheShard
	global   *generation
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[cacheKey]*cacheEntry
	_  [40]byte // keep shards on separate cache lines
}

func newDecisionCache(entries int, global *generation) *decisionCache {
	if entries <= 0 {
		entries = 1 << 20
	}
	c := &decisionCache{seed: maphash.MakeSeed(), perShard: max(entries/cacheShards, 16), global: global}
	for i := range c.shards {
		c.shards[i].m = map[cacheKey]*cacheEntry{}
	}
	return c
}

func (c *decisionCache) shard(k *cacheKey) *cacheShard {
	h := maphash.String(c.seed, k.topic) ^ maphash.String(c.seed, k.p.ID)
	return &c.shards[h%cacheShards]
}

func (c *decisionCache) get(k *cacheKey, clock Clock) (Decision, bool) {
	s := c.shard(k)
	s.mu.RLock()
	e := s.m[*k]
	s.mu.RUnlock()
	if e == nil || e.global != c.global.n.Load() {
		return Decision{}, false
	}
	for i := 0; i < e.ndeps; i++ {
		if e.deps[i].g.n.Load() != e.deps[i].n {
			return Decision{}, false
		}
	}
	if !e.d.Expires.IsZero() && !clock.Now().Before(e.d.Expires) {
		return Decision{}, false
	}
	return e.d, true
}

// put stores d computed at global generation gl. The generations in deps
// were read during the evaluation, under the engine's read lock, so a change
// that raced with it has bumped one of them and the entry is born stale.
func (c *decisionCache) put(k *cacheKey, d Decision, gl uint64, deps []depRef) {
	e := &cacheEntry{d: d, global: gl, ndeps: len(deps)}
	copy(e.deps[:], deps)
	s := c.shard(k)
	s.mu.Lock()
	if len(s.m) >= c.perShard {
		clear(s.m) // crude but bounded; hot entries come back at once
	}
	s.m[*k] = e
	s.mu.Unlock()
}
