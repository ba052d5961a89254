package hooks

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/valyala/fastjson"

	"github.com/veil-iot/veil/policies"
)

// pastValuesAhead is how much of a stream's archive past the reading being
// decided one load takes, for the readings the walk decides next.
const pastValuesAhead = time.Hour

// pastValuesMax bounds the readings one load keeps of a stream.
const pastValuesMax = 1000

// pastValues is a history walk's context provider: the live values as they
// were at the reading being decided (at), taken from the archive — for
// data.{thing}.{stream}.{field}, the latest reading of that stream at or
// before at, however long before (a privacy switch reports when it
// changes). A live delivery reads the stream's latest reading; a history
// answer, deciding each reading as a live delivery of it was decided,
// reads the one that was latest then.
//
// The engine asks under its lock, so Value answers from memory: a stream
// not loaded as far as at is noted as wanted and answers missing, and the
// walk loads it and decides again (readingDecisions.decide). A walk runs on
// one goroutine, and so does every use of its pastValues.
type pastValues struct {
	ctx     context.Context
	source  HistorySource
	parser  fastjson.Parser
	at      time.Time
	streams map[streamKey]*pastStream
	wanted  []streamKey
}

type streamKey struct{ thing, stream string }

// pastStream is what a walk loaded of one stream: every reading of
// [from, to), and the latest one before from first.
type pastStream struct {
	from, to time.Time
	readings []pastValue
}

type pastValue struct {
	at     time.Time
	raw    []byte
	fields map[string]any // parsed when first asked; nil: not yet
	parsed bool
}

// Value implements policies.ContextProvider as of p.at.
func (p *pastValues) Value(thing, stream, field string) (any, bool) {
	k := streamKey{thing, stream}
	s := p.streams[k]
	if s == nil || p.at.Before(s.from) || !p.at.Before(s.to) {
		p.wanted = append(p.wanted, k)
		return nil, false
	}
	// The latest reading at or before at.
	i := sort.Search(len(s.readings), func(i int) bool { return s.readings[i].at.After(p.at) }) - 1
	if i < 0 {
		return nil, false
	}
	r := &s.readings[i]
	if !r.parsed {
		r.fields, r.parsed = readingFields(&p.parser, r.raw), true
	}
	v, ok := r.fields[field]
	return v, ok
}

// LatestSource is a HistorySource that also finds a stream's latest
// reading before a time, however long before, in one query (the
// archive's last()). A source without it is read from its beginning.
type LatestSource interface {
	Latest(ctx context.Context, thing, stream string, before time.Time) (t time.Time, reading []byte, ok bool, err error)
}

// load reads stream k from the archive from at (and the latest reading
// before it) to pastValuesAhead past it.
func (p *pastValues) load(k streamKey, at time.Time) error {
	if p.streams == nil {
		p.streams = map[streamKey]*pastStream{}
	}
	// Within the archive's range: a reading near its ends is no reason
	// for a query InfluxDB refuses.
	s := &pastStream{from: at, to: inArchiveRange(at.Add(pastValuesAhead))}
	scanFrom, old := historyEarliest, p.streams[k]
	switch latest, ok := p.source.(LatestSource); {
	case ok:
		t, raw, found, err := latest.Latest(p.ctx, k.thing, k.stream, at)
		if err != nil {
			return fmt.Errorf("live values of %s/%s before %s: %w", k.thing, k.stream, at.UTC().Format(time.RFC3339Nano), err)
		}
		if found {
			s.readings = append(s.readings, pastValue{at: t, raw: raw})
		}
		scanFrom = at
	case old != nil && !old.to.After(at):
		// The walk went on past what it loaded: what came before at is
		// read from there, after the latest reading loaded.
		if n := len(old.readings); n > 0 {
			s.readings = append(s.readings, old.readings[n-1])
		}
		scanFrom = old.to
	}
	err := p.source.History(p.ctx, k.thing, k.stream, scanFrom, s.to, func(t time.Time, raw []byte) bool {
		if t.Before(at) {
			// Before at only the latest counts: one is kept.
			if n := len(s.readings); n > 0 && s.readings[n-1].at.Before(at) {
				s.readings[n-1] = pastValue{at: t, raw: raw}
			} else {
				s.readings = append(s.readings, pastValue{at: t, raw: raw})
			}
			return true
		}
		if len(s.readings) > pastValuesMax {
			s.to = t // the rest another time, from t on
			return false
		}
		s.readings = append(s.readings, pastValue{at: t, raw: raw})
		return true
	})
	if err != nil {
		return fmt.Errorf("live values of %s/%s at %s: %w", k.thing, k.stream, at.UTC().Format(time.RFC3339Nano), err)
	}
	p.streams[k] = s
	return nil
}

// readingFields returns the top-level scalars of a reading (nil if it is
// not a JSON object), as data.* conditions read them.
func readingFields(p *fastjson.Parser, raw []byte) map[string]any {
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

// readingDecisions decides one requester's readings, each as of its own
// time (Engine.DecideAtWith, with the live values of then), for a walk
// that goes forward in time: a decision holds for the readings after it
// until it expires (a window's or an hour condition's end), it depends on
// live data, or the configuration changes.
type readingDecisions struct {
	engine  *policies.Engine
	req     policies.Request
	values  pastValues
	d       policies.Decision
	at      time.Time // d is the decision as of at…
	changes uint64    // …under the configuration Engine.Changes counted then
	held    bool
}

// maxValueLoads bounds the loads of live values one decision takes: each
// adds a stream a condition reads, and a decision reads only so many.
const maxValueLoads = 16

var errTooManyValueStreams = errors.New("the policies' conditions read too many live-data streams")

func (r *readingDecisions) decide(t time.Time) (*policies.Decision, error) {
	changes := r.engine.Changes()
	if r.held && !r.d.Dynamic && changes == r.changes && !t.Before(r.at) && (r.d.Expires.IsZero() || t.Before(r.d.Expires)) {
		return &r.d, nil
	}
	for loads := 0; ; loads++ {
		r.values.at, r.values.wanted = t, r.values.wanted[:0]
		r.d, r.at, r.changes, r.held = r.engine.DecideAtWith(r.req, t, &r.values), t, changes, true
		if len(r.values.wanted) == 0 {
			return &r.d, nil
		}
		r.held = false
		if loads == maxValueLoads {
			return nil, errTooManyValueStreams
		}
		for _, k := range r.values.wanted {
			if s := r.values.streams[k]; s != nil && !t.Before(s.from) && t.Before(s.to) {
				continue // wanted twice
			}
			if err := r.values.load(k, t); err != nil {
				return nil, err
			}
		}
	}
}
