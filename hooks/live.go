package hooks

import (
	"sync"
	"sync/atomic"

	"github.com/valyala/fastjson"
)

// LiveValues remembers the latest reading of every stream, for policy
// conditions on data.{thing}.{stream}.{field} (the context provider).
//
// Observe runs on every publish, Value only when a condition asks, so a
// reading is kept as the publisher sent it and parsed the first time a
// condition reads it: a broker whose policies never look at live data pays
// one pointer store per publish, not a JSON parse.
type LiveValues struct {
	streams sync.Map // liveKey → *atomic.Pointer[liveReading]; read without a lock by every publish
	pool    fastjson.ParserPool
}

type liveKey struct{ thing, stream string }

// liveReading is one stream's latest payload; fields holds its top-level
// scalars once parsed (nil if it was not a JSON object).
type liveReading struct {
	raw    []byte
	once   sync.Once
	fields map[string]any
}

// NewLiveValues returns an empty store.
func NewLiveValues() *LiveValues { return &LiveValues{} }

// Value implements policies.ContextProvider.
func (l *LiveValues) Value(thing, stream, field string) (any, bool) {
	slot, ok := l.streams.Load(liveKey{thing, stream})
	if !ok {
		return nil, false
	}
	r := slot.(*atomic.Pointer[liveReading]).Load()
	r.once.Do(func() { r.fields = l.parse(r.raw) })
	v, ok := r.fields[field]
	return v, ok
}

// Observe records payload as the latest reading of thing's stream. The
// payload is kept, not copied: the caller must not modify it afterwards
// (mochi reads every packet into a fresh buffer).
func (l *LiveValues) Observe(thing, stream string, payload []byte) {
	r := &liveReading{raw: payload}
	k := liveKey{thing, stream}
	if slot, ok := l.streams.Load(k); ok {
		slot.(*atomic.Pointer[liveReading]).Store(r)
		return
	}
	// A stream's first reading is in its slot before anyone can see the slot.
	fresh := new(atomic.Pointer[liveReading])
	fresh.Store(r)
	if slot, loaded := l.streams.LoadOrStore(k, fresh); loaded {
		slot.(*atomic.Pointer[liveReading]).Store(r)
	}
}

// parse returns the top-level scalar fields of a JSON object; anything else
// has no fields.
func (l *LiveValues) parse(raw []byte) map[string]any {
	p := l.pool.Get()
	defer l.pool.Put(p)
	v, err := p.ParseBytes(raw)
	if err != nil {
		return nil
	}
	o, err := v.Object()
	if err != nil {
		return nil
	}
	fields := make(map[string]any, o.Len())
	o.Visit(func(k []byte, v *fastjson.Value) {
		switch v.Type() {
		case fastjson.TypeNumber:
			fields[string(k)] = v.GetFloat64()
		case fastjson.TypeString:
			fields[string(k)] = string(v.GetStringBytes())
		case fastjson.TypeTrue:
			fields[string(k)] = true
		case fastjson.TypeFalse:
			fields[string(k)] = false
		}
	})
	return fields
}
