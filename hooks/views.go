package hooks

import (
	"bytes"
	"hash/maphash"
	"sync"
	"sync/atomic"

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

	renders atomic.Int64
}

type renderKey struct {
	view  *policies.View
	topic string
	sum   uint64
}

type rendered struct {
	raw []byte // the input (mochi's packet buffer, never modified), compared on hit so a hash collision cannot swap payloads
	out []byte
	err error
}

func newRenderings(max int) *renderings {
	return &renderings{seed: maphash.MakeSeed(), cur: map[renderKey]*rendered{}, max: max}
}

// message is one payload, parsed at most once however many views render it.
type message struct {
	raw    []byte
	once   sync.Once
	parsed *policies.Payload
	err    error
	parses *atomic.Int64
}

func newMessage(raw []byte, parses *atomic.Int64) *message { return &message{raw: raw, parses: parses} }

func (m *message) payload() (*policies.Payload, error) {
	m.once.Do(func() {
		m.parsed, m.err = policies.ParsePayload(m.raw)
		if m.parses != nil {
			m.parses.Add(1)
		}
	})
	return m.parsed, m.err
}

// render returns v applied to the message, computing it at most once while
// cached. The returned slice is shared: callers hand it to mochi, which only
// reads it.
func (r *renderings) render(v *policies.View, topic string, m *message) ([]byte, error) {
	k := renderKey{view: v, topic: topic, sum: maphash.Bytes(r.seed, m.raw)}
	r.mu.RLock()
	e := r.cur[k]
	if e == nil {
		e = r.old[k]
	}
	r.mu.RUnlock()
	if e != nil && bytes.Equal(e.raw, m.raw) {
		return e.out, e.err
	}
	p, err := m.payload()
	var out []byte
	if err == nil {
		out, err = v.Render(p)
		r.renders.Add(1)
	}
	e = &rendered{raw: m.raw, out: out, err: err}
	r.mu.Lock()
	if len(r.cur) >= r.max {
		r.old, r.cur = r.cur, make(map[renderKey]*rendered, r.max)
	}
	r.cur[k] = e
	r.mu.Unlock()
	return out, err
}
