package hooks

import (
	"bytes"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/veil-iot/veil/policies"
)

// renderings remembers each message's rewrite per view, so a fan-out to
// many subscribers in few views rewrites once per view: the publisher's
// goroutine renders while deciding deliveries, each subscriber's write loop
// finds the bytes again by (view, payload). It is a direct-mapped table of
// immutable entries, read and replaced without locks: a newer rendering
// simply evicts whatever shared its slot, and a miss only costs a
// deterministic re-render. A rendering depends on the view and the payload
// bytes alone, never on the topic or the subscriber.
type renderings struct {
	seed  maphash.Seed
	slots []atomic.Pointer[rendered]
	mask  uint64

	renders atomic.Int64
	parses  atomic.Int64 // those of Apply; a message counts its own ParsePayload
}

type rendered struct {
	view *policies.View
	sum  uint64
	raw  []byte // the input (mochi's packet buffer, never modified), compared on hit so a hash collision cannot swap payloads
	out  []byte
	err  error
}

// newRenderings returns a table of at least size slots (a power of two).
func newRenderings(size int) *renderings {
	n := 1
	for n < size {
		n <<= 1
	}
	return &renderings{seed: maphash.MakeSeed(), slots: make([]atomic.Pointer[rendered], n), mask: uint64(n - 1)}
}

// message is one payload being fanned out: its first rewriting view
// renders from the bytes, and it is parsed at most once however many views
// render it after that. Its deliveries are decided by the publisher's
// goroutine, one after another, so the message itself remembers its last
// renderings: every subscriber in the same view after the first costs a
// pointer comparison. (Two publishers on one topic at once may share a
// message, hence the atomics.)
type message struct {
	topic  string
	raw    []byte
	once   sync.Once
	parsed *policies.Payload
	err    error
	parses *atomic.Int64
	memo   [2]atomic.Pointer[rendered]
	// first is the message's first rendering, held in place so that a
	// fan-in (one view per message) allocates no entry for it; taken by
	// the goroutine that sets firstTaken.
	first      rendered
	firstTaken atomic.Bool

	// live is the message as the latest reading of its stream
	// (LiveValues), held in place for the same reason.
	live liveReading

	// The delivery decisions of the fan-out so far, by principal: mochi
	// asks once per subscriber, and a fan-out's subscribers are mostly a
	// few principals (a household's devices and apps). decisions counts the
	// questions, so that a message with one subscriber (a fan-in) keeps
	// nothing.
	decided   [4]atomic.Pointer[decidedFor]
	decisions atomic.Int32
	closed    atomic.Bool // the fan-out is over: its audit counts are recorded
	swept     atomic.Bool // seen by a sweep of the fan-outs (SweepFanouts)

	timed *timedPath // set when the message's publish path is timed (Timing)
}

func newMessage(topic string, raw []byte, parses *atomic.Int64) *message {
	return &message{topic: topic, raw: raw, parses: parses}
}

// decidedFor is a delivery decision of one message for who, asking under
// purpose.
type decidedFor struct {
	who     policies.Principal
	purpose string
	changes uint64 // Engine.Changes() before d was asked for
	d       *policies.Decision
	n       atomic.Int64 // deliveries decided by it, not yet told the audit
}

// decision returns the decision of this message's fan-out for who under
// purpose, asked at the configuration's changes-th change, or nil.
func (m *message) decision(who policies.Principal, purpose string, changes uint64) *decidedFor {
	for i := range m.decided {
		e := m.decided[i].Load()
		if e == nil {
			break
		}
		if e.changes == changes && e.who == who && e.purpose == purpose {
			return e
		}
	}
	return nil
}

// decide counts a delivery question and keeps d, the answer for who under
// purpose, for the fan-out's later subscribers: from the second question
// on, and only a decision that holds for the whole fan-out (one that
// depends on live data or ends at a time is asked anew).
// It returns what it kept, or nil.
func (m *message) decide(who policies.Principal, purpose string, changes uint64, d *policies.Decision) *decidedFor {
	if m.decisions.Add(1) < 2 || d.Dynamic || !d.Expires.IsZero() {
		return nil
	}
	e := &decidedFor{who: who, purpose: purpose, changes: changes, d: d}
	for i := range m.decided {
		if m.decided[i].CompareAndSwap(nil, e) {
			return e
		}
	}
	return nil
}

// fanouts holds the messages being fanned out right now, by topic, so that
// the deliveries' ACL checks (which mochi gives the topic only) find the
// payload and the decisions the message keeps. It is a direct-mapped table
// read and written without locks; a message evicted by another topic
// sharing its slot, or by a second publisher on its topic, hands the audit
// what it counted, and only costs its remaining deliveries the early
// judgement of their payload (OnPacketEncode judges each delivery's real
// payload in any case) and a decision and audit record each.
type fanouts struct {
	seed  maphash.Seed
	slots [1024]atomic.Pointer[message]
}

func newFanouts() *fanouts { return &fanouts{seed: maphash.MakeSeed()} }

// sameBytes reports whether a and b are the same slice of the same buffer
// (mochi hands every hook of one publish the same payload slice).
func sameBytes(a, b []byte) bool {
	return unsafe.SliceData(a) == unsafe.SliceData(b) && len(a) == len(b)
}

func (f *fanouts) slot(topic string) *atomic.Pointer[message] {
	return &f.slots[maphash.String(f.seed, topic)&(uint64(len(f.slots))-1)]
}

// begin makes m the message being fanned out on its topic, and returns
// the one it took the place of.
func (f *fanouts) begin(m *message) *message { return f.slot(m.topic).Swap(m) }

// current returns the message being fanned out on topic, or nil.
func (f *fanouts) current(topic string) *message {
	if m := f.slot(topic).Load(); m != nil && m.topic == topic {
		return m
	}
	return nil
}

// sweep closes and forgets the messages a sweep saw before (all: every
// message), and marks the others.
func (f *fanouts) sweep(all bool, closeMessage func(*message)) {
	for i := range f.slots {
		m := f.slots[i].Load()
		if m == nil {
			continue
		}
		if all || m.swept.Swap(true) {
			f.slots[i].CompareAndSwap(m, nil)
			closeMessage(m)
		}
	}
}

// end forgets the message with payload raw on topic, and returns it, if
// it is still there (if not, whoever took its place has it).
func (f *fanouts) end(topic string, raw []byte) *message {
	slot := f.slot(topic)
	if m := slot.Load(); m != nil && m.topic == topic && sameBytes(m.raw, raw) && slot.CompareAndSwap(m, nil) {
		return m
	}
	return nil
}

func (m *message) payload() (*policies.Payload, error) {
	m.once.Do(func() {
		m.parsed, m.err = policies.ParsePayload(m.raw)
		if m.parses != nil {
			m.parses.Add(1)
		}
	})
	return m.parsed, m.err
}

// renderMessage returns v applied to m, and leaves the rendering in the
// table for the subscribers' write loops (render finds it there). The
// returned slice is shared: callers hand it to mochi, which only reads it.
func (r *renderings) renderMessage(v *policies.View, m *message) ([]byte, error) {
	for i := range m.memo {
		if e := m.memo[i].Load(); e != nil && e.view == v {
			return e.out, e.err
		}
	}
	var out []byte
	var err error
	if m.memo[0].Load() == nil {
		// The message's first view renders straight from the bytes: Apply
		// does the parse and the rendering in one pass and keeps no parse,
		// a third cheaper than ParsePayload and Render (a fan-in renders
		// every message in one view only); for a view that does not
		// rewrite it is the check that the payload is a JSON object. A
		// second view parses once for itself and any later ones.
		out, err = v.Apply(m.raw)
		r.parses.Add(1)
		r.renders.Add(1)
	} else {
		var p *policies.Payload
		if p, err = m.payload(); err == nil {
			out, err = v.Render(p)
			r.renders.Add(1)
		}
	}
	sum := maphash.Bytes(r.seed, m.raw)
	var e *rendered
	if m.firstTaken.CompareAndSwap(false, true) {
		e = &m.first
		*e = rendered{view: v, sum: sum, raw: m.raw, out: out, err: err}
	} else {
		e = &rendered{view: v, sum: sum, raw: m.raw, out: out, err: err}
	}
	for i := range m.memo {
		if m.memo[i].CompareAndSwap(nil, e) {
			break
		}
	}
	r.slot(v, sum).Store(e)
	return out, err
}

// render returns v applied to the payload raw: the rendering the fan-out
// left in the table when there is one, else computed and remembered.
func (r *renderings) render(v *policies.View, raw []byte) ([]byte, error) {
	sum := maphash.Bytes(r.seed, raw)
	slot := r.slot(v, sum)
	if e := slot.Load(); e != nil && e.view == v && e.sum == sum && bytes.Equal(e.raw, raw) {
		return e.out, e.err
	}
	out, err := v.Apply(raw)
	r.parses.Add(1)
	r.renders.Add(1)
	slot.Store(&rendered{view: v, sum: sum, raw: raw, out: out, err: err})
	return out, err
}

func (r *renderings) slot(v *policies.View, sum uint64) *atomic.Pointer[rendered] {
	return &r.slots[(sum^maphash.Comparable(r.seed, v))&r.mask]
}
