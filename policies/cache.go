package policies

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"
)

// maxDeps is how many generations one cached decision may depend on
// (principal, thing owner, co-owners); a decision needing more is not cached.
const maxDeps = 4

// cacheKey is the request itself: Decide looks it up without copying it.
type cacheKey = Request

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
	seed   uint64
	shift  uint8 // 64 - log2(len(slots)): a slot is the top bits of a Fibonacci hash
	slots  []atomic.Pointer[cacheEntry]
	global *generation
}

func newDecisionCache(entries int, global *generation) *decisionCache {
	if entries <= 0 {
		entries = 1 << 18
	}
	n := 1 << bits.Len(uint(entries-1)) // a power of two ≥ entries
	return &decisionCache{seed: maphash.Comparable(maphash.MakeSeed(), 0) | 1, shift: uint8(64 - bits.Len(uint(n-1))),
		slots: make([]atomic.Pointer[cacheEntry], n), global: global}
}

// slot takes the top bits of the hash times the golden ratio: they mix
// every bit of the hash, where its low bits alone clustered for short
// names under some seeds (TestDecisionCacheHashSpreads failed about one
// run in 300 with a mask).
func (c *decisionCache) slot(k *cacheKey) *atomic.Pointer[cacheEntry] {
	return &c.slots[(c.hash(k)*0x9E3779B97F4A7C15)>>c.shift]
}

// hash mixes the whole key (a seeded multiply-mix over 16-byte chunks, as
// wyhash; the three strings are mixed independently so that the processor
// overlaps them): cheaper than one maphash call per string, which at a hit
// rate near one was a third of a lookup. Distinct keys may share a slot;
// the full key is compared on every hit.
func (c *decisionCache) hash(k *cacheKey) uint64 {
	t := mixString(c.seed, k.Topic)
	id, purpose := k.Principal.ID, k.Purpose
	lens := uint64(len(id))<<32 | uint64(len(purpose))<<40 | uint64(len(k.Action))<<48 | uint64(k.Principal.Kind)<<56
	if len(id) < 8 && len(purpose) < 8 { // the usual short names: one multiplication for both
		return mum(short(id)^lens^mix0, short(purpose)^t^mix1)
	}
	p := mixString(c.seed^mix1, id)
	u := mixString(c.seed^mix2, purpose)
	return mum(t^lens, p^bits.RotateLeft64(u, 29))
}

// short reads all of s (fewer than eight bytes) into a word; the caller
// mixes the length in.
func short(s string) uint64 {
	switch {
	case len(s) >= 4:
		return uint64(load32(s))<<32 | uint64(load32(s[len(s)-4:]))
	case len(s) > 0:
		return uint64(s[0])<<16 | uint64(s[len(s)>>1])<<8 | uint64(s[len(s)-1])
	}
	return 0
}

const (
	mix0 = 0xa0761d6478bd642f
	mix1 = 0xe7037ed1a0b428db
	mix2 = 0x8ebc6af09c88c6e3
)

// mum is wyhash's mixing step: the two halves of a 128-bit product, xored.
func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// mixString hashes s from seed h, sixteen bytes per multiplication; the
// length is mixed in, so that strings of different lengths differ.
func mixString(h uint64, s string) uint64 {
	h ^= uint64(len(s)) * mix2
	for len(s) > 16 {
		h = mum(load64(s)^mix0, load64(s[8:])^h)
		s = s[16:]
	}
	var a, b uint64
	switch {
	case len(s) >= 8: // 8..16: the first and last eight bytes
		a, b = load64(s), load64(s[len(s)-8:])
	case len(s) >= 4:
		a, b = uint64(load32(s)), uint64(load32(s[len(s)-4:]))
	case len(s) > 0:
		a = uint64(s[0])<<16 | uint64(s[len(s)>>1])<<8 | uint64(s[len(s)-1])
	}
	return mum(a^mix0, b^h^mix1)
}

func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

func load32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
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

// put stores d computed at global generation gl, and returns its entry. The
// generations in deps were read during the evaluation, under the engine's
// read lock, so a change that raced with it has bumped one of them and the
// entry is born stale.
func (c *decisionCache) put(k *cacheKey, d Decision, gl uint64, deps []depRef) *cacheEntry {
	e := &cacheEntry{key: *k, d: d, global: gl, ndeps: len(deps)}
	copy(e.deps[:], deps)
	c.slot(k).Store(e)
	return e
}
