package hooks

import (
	"sync"

	"github.com/valyala/fastjson"
)

// LiveValues remembers the latest scalar fields of every reading, for
// policy conditions on data.{thing}.{stream}.{field} (the context provider).
type LiveValues struct {
	mu     sync.RWMutex
	values map[liveKey]any
	pool   fastjson.ParserPool
}

type liveKey struct{ thing, stream, field string }

// NewLiveValues returns an empty store.
func NewLiveValues() *LiveValues { return &LiveValues{values: map[liveKey]any{}} }

// Value implements policies.ContextProvider.
func (l *LiveValues) Value(thing, stream, field string) (any, bool) {
	l.mu.RLock()
	v, ok := l.values[liveKey{thing, stream, field}]
	l.mu.RUnlock()
	return v, ok
}

// Observe records the top-level scalar fields of a reading; anything that
// is not a JSON object is ignored.
func (l *LiveValues) Observe(thing, stream string, payload []byte) {
	p := l.pool.Get()
	defer l.pool.Put(p)
	v, err := p.ParseBytes(payload)
	if err != nil {
		return
	}
	o, err := v.Object()
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	o.Visit(func(k []byte, v *fastjson.Value) {
		key := liveKey{thing, stream, string(k)}
		switch v.Type() {
		case fastjson.TypeNumber:
			l.values[key] = v.GetFloat64()
		case fastjson.TypeString:
			l.values[key] = string(v.GetStringBytes())
		case fastjson.TypeTrue:
			l.values[key] = true
		case fastjson.TypeFalse:
			l.values[key] = false
		}
	})
}
