package hooks

import (
	"bytes"
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fastjson"

	"github.com/veil-iot/veil/policies"
)

// LiveValues remembers the latest reading of every stream, for policy
// conditions on data.{thing}.{stream}.{field} (the context provider).
//
// Observe runs on every publish, Value only when a condition asks, so a
// reading is kept as the publisher sent it and parsed the first time a
// condition reads it: a broker whose policies never look at live data pays
// a map read and one pointer store per publish, not a JSON parse.
type LiveValues struct {
	// Streams by data topic, read without a lock by every publish: an
	// immutable map, replaced whole with the ones added since once those
	// have been asked for often enough to pay for the copy (so a broker
	// with many streams does not copy all of them for each new one).
	streams atomic.Pointer[map[string]*liveSlot]
	mu      sync.Mutex
	added   map[string]*liveSlot // streams not in streams yet; under mu
	misses  int                  // lookups that found a stream only in added; under mu
	pool    fastjson.ParserPool
	// before, when set, tells the time of a stream's reading before its
	// first since start, when needed says so (SeedFrom).
	before LatestSource
	needed func() bool
	asking chan struct{} // the archive queries in flight (seedQueries)
}

// seedWait bounds how long a stream's first reading since start waits for
// the archive to tell when the reading before it was taken.
const seedWait = time.Second

// seedQueries bounds the archive queries in flight at once: after a
// restart every stream's first reading asks, and a fleet reconnecting at
// once must not open a query per device. A reading that finds no room
// within seedWait is taken as not the first, as when the archive cannot
// answer.
const seedQueries = 16

// SeedFrom makes the first reading of each stream since start find when
// the stream's reading before it was taken in src (the archive). A rate
// releases the first reading of each period: without it, the first reading
// after a restart passed as the first of its period, though one had gone
// out before the restart. When src cannot answer within seedWait, the
// reading is taken as not the first (a rate withholds it). needed (nil:
// always) tells whether a rate could ask (Engine.HasRates): without one,
// a restart need not send every stream's first reading to the archive.
// Called before the broker serves.
func (l *LiveValues) SeedFrom(src LatestSource, needed func() bool) {
	l.before, l.needed = src, needed
	l.asking = make(chan struct{}, seedQueries)
}

// previous returns when the stream of topic took its reading before at
// (Unix ns; 0: none), asking the archive.
func (l *LiveValues) previous(topic string, at int64) int64 {
	res, ok := policies.ParseTopic(topic)
	if !ok || res.Kind != policies.ResData || at == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), seedWait)
	defer cancel()
	select {
	case l.asking <- struct{}{}:
		defer func() { <-l.asking }()
	case <-ctx.Done():
		return at // unknown, as below
	}
	t, _, found, err := l.before.Latest(ctx, res.Thing, res.Name, time.Unix(0, at))
	switch {
	case err != nil:
		return at // unknown: as if a reading had come just before
	case !found:
		return 0
	}
	return t.UnixNano()
}

type liveSlot = atomic.Pointer[liveReading]

// liveReading is one stream's latest payload; fields holds its top-level
// scalars once parsed (nil if it was not a JSON object).
type liveReading struct {
	raw []byte
	// at is when the enforcer took the reading (Unix ns), prevAt when it
	// took the stream's reading before (0: none since start): a rate
	// releases the first reading of each period (firstOfPeriod).
	at, prevAt int64
	// past is the stream's recent past of retained readings, as of this
	// reading: its own record if it was retained.
	past   *pastReading
	once   sync.Once
	fields map[string]any
}

// pastReading is a retained reading as the stream's recent past keeps it,
// a few retained readings back (keptReadings): its bytes, mochi's Created
// (seconds) and the enforcer's times, not the message around it. A
// retained copy (sent on a subscription, or retain-as-published) is judged
// by it though newer readings came (LiveValues.find); only retained
// readings have such copies.
type pastReading struct {
	raw                 []byte
	created, at, prevAt int64
	older               atomic.Pointer[pastReading]
}

// keptReadings is how many retained readings of a stream its past keeps.
const keptReadings = 8

// NewLiveValues returns an empty store.
func NewLiveValues() *LiveValues { return &LiveValues{} }

// Value implements policies.ContextProvider.
func (l *LiveValues) Value(thing, stream, field string) (any, bool) {
	var buf [128]byte
	key := append(append(append(append(buf[:0], "things/"...), thing...), "/data/"...), stream...)
	var slot *liveSlot
	if m := l.streams.Load(); m != nil {
		slot = (*m)[string(key)] // a map index with string(key) does not allocate
	}
	if slot == nil {
		if slot = l.slot(string(key), nil); slot == nil {
			return nil, false
		}
	}
	r := slot.Load()
	r.once.Do(func() { r.fields = l.parse(r.raw) })
	v, ok := r.fields[field]
	return v, ok
}

// Observe records payload as the latest reading of the stream of topic, a
// data topic (things/{thing}/data/{stream}). The payload is kept, not
// copied: the caller must not modify it afterwards (mochi reads every
// packet into a fresh buffer).
func (l *LiveValues) Observe(topic string, payload []byte) {
	l.keep(topic, &liveReading{raw: payload}, 0, false)
}

// keep is Observe of a reading the caller allocated (the enforcer's is part
// of the message it fans out: one allocation per publish fewer), taken at
// r.at, created by mochi at created (Unix seconds), retained or not. r
// must not be changed afterwards.
func (l *LiveValues) keep(topic string, r *liveReading, created int64, retained bool) {
	var p *pastReading
	if retained {
		p = &pastReading{raw: r.raw, created: created, at: r.at}
		r.past = p
	}
	// A stream's first reading since start: the one before it is in the
	// archive, if anywhere.
	var seeded int64
	if l.before != nil && (l.needed == nil || l.needed()) && l.latest(topic) == nil {
		seeded = l.previous(topic, r.at)
	}
	r.prevAt = seeded
	s := l.slot(topic, r) // a new stream's slot holds r already, after seeded
	for {
		prev := s.Load()
		if prev == r {
			return
		}
		// Set before r is published: readers find it complete.
		r.prevAt = seeded
		var older *pastReading
		if prev != nil {
			r.prevAt, older = prev.at, prev.past
		}
		if p == nil {
			r.past = older
		} else {
			p.prevAt = r.prevAt
			p.older.Store(older)
		}
		if s.CompareAndSwap(prev, r) {
			// The retained readings beyond keptReadings go (and their
			// payloads).
			x := p
			for i := 1; i < keptReadings && x != nil; i++ {
				x = x.older.Load()
			}
			if x != nil {
				x.older.Store(nil)
			}
			return
		}
	}
}

// find returns the stream's retained reading on topic with payload raw
// created at created, among its last keptReadings, or nil; known says
// whether the stream has any reading since start.
func (l *LiveValues) find(topic string, raw []byte, created int64) (p *pastReading, known bool) {
	r := l.latest(topic)
	if r == nil {
		return nil, false
	}
	for p = r.past; p != nil; p = p.older.Load() {
		if p.created == created && bytes.Equal(p.raw, raw) {
			return p, true
		}
	}
	return nil, true
}

// latest returns the stream's latest reading on topic, or nil.
func (l *LiveValues) latest(topic string) *liveReading {
	if m := l.streams.Load(); m != nil {
		if s := (*m)[topic]; s != nil {
			return s.Load()
		}
	}
	if s := l.slot(topic, nil); s != nil {
		return s.Load()
	}
	return nil
}

// slot returns the slot of topic's stream. A stream not seen yet gets one
// holding first, so that nobody sees it empty; with first nil it has none.
func (l *LiveValues) slot(topic string, first *liveReading) *liveSlot {
	if m := l.streams.Load(); m != nil {
		if s := (*m)[topic]; s != nil {
			return s
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	read := l.streams.Load()
	if read != nil {
		if s := (*read)[topic]; s != nil { // promoted meanwhile
			return s
		}
	}
	s := l.added[topic]
	switch {
	case s != nil:
		l.misses++
	case first == nil:
		return nil
	default:
		s = new(liveSlot)
		s.Store(first)
		if l.added == nil {
			l.added = map[string]*liveSlot{}
		}
		l.added[topic] = s
	}
	n := 0
	if read != nil {
		n = len(*read)
	}
	if l.misses >= len(l.added)+n/8 {
		m := make(map[string]*liveSlot, n+len(l.added))
		if read != nil {
			maps.Copy(m, *read)
		}
		maps.Copy(m, l.added)
		l.streams.Store(&m)
		l.added, l.misses = nil, 0
	}
	return s
}

// parse returns the top-level scalar fields of a JSON object; anything else
// has no fields.
func (l *LiveValues) parse(raw []byte) map[string]any {
	p := l.pool.Get()
	defer l.pool.Put(p)
	return readingFields(p, raw)
}
