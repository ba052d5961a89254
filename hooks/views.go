package hooks

import (
	"bytes"
	"hash/maphash"
	"sync"

	"github.com/veil-iot/veil/policies"
)

// renderings remembers each message's rewrite per view, so a fan-out to
// many subscribers in few views rewrites once per view: the publisher's
// goroutine renders while deciding deliveries, each subscriber's write loop
// finds the bytes again by (view, topic, payload). Entries age out in two
// generations; a miss only costs a deterministic re-render.
type renderings struct {
	seed maphash.Seed
	mu   sync.RWMutex
	cur  map[renderKey]*rendered
	old  map[renderKey]*rendered
	max  int
}

type renderKey struct {
	view  *policies.View
	topic string
	sum   uint64
}

type rendered struct {
	raw []byte // the input, compared on hit so a hash collision cannot swap payloads
	out []byte
	err error
}

func newRenderings(max int) *renderings {
	return &renderings{seed: maphash.MakeSeed(), cur: map[renderKey]*rendered{}, max: max}
}

// render returns v applied to payload, computing it at most once while cached.
// The returned slice is shared: callers hand it to mochi, which only reads it.
func (r *renderings) render(v *policies.View, topic string, payload []byte) ([]byte, error) {
	k := renderKey{view: v, topic: topic, sum: maphash.Bytes(r.seed, payload)}
	r.mu.RLock()
	e := r.cur[k]
	if e == nil {
		e = r.old[k]
	}
	r.mu.RUnlock()
	if e != nil && bytes.Equal(e.raw, payload) {
		return e.out, e.err
	}
	out, err := v.Apply(payload)
	e = &rendered{raw: bytes.Clone(payload), out: out, err: err}
	r.mu.Lock()
	if len(r.cur) >= r.max {
		r.old, r.cur = r.cur, make(map[renderKey]*rendered, r.max)
	}
	r.cur[k] = e
	r.mu.Unlock()
	return out, err
}
