package hooks

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// Timing measures the time Veil's enforcement adds to a delivery, in the
// broker, for operators (/metrics) and for the benchmark's latency target:
// what a delivery waits for beyond mochi's own work is
//
//   - the publish path: the publish decision, OnPublish and the decision
//     (and rendering) of every delivery of the message up to the last one,
//     all on the publisher's goroutine before mochi queues the deliveries;
//   - the encode hook on the subscriber's write loop: the second decision
//     and the rendering lookup.
//
// One publish in SampleEvery (8) is timed end to end (one at a time), and one
// encode in SampleEvery of each subscriber's, so an unsampled delivery costs
// a counter.
type Timing struct {
	// Path and Encode receive durations in seconds (a Prometheus histogram
	// fits); nil ones are not measured.
	Path, Encode interface{ Observe(float64) }
	// SampleEvery times one in this many (0: 8).
	SampleEvery uint64

	// The publisher whose publish decision was just timed: its OnPublish
	// picks the message up.
	decided atomic.Pointer[timedDecision]
	// The message being timed.
	current atomic.Pointer[message]
}

type timedDecision struct {
	cl *mqtt.Client
	ns int64
}

// defaultSampleEvery is how many publishes (or encodes) share one timed one.
const defaultSampleEvery = 8

func sampleEvery(n uint64) uint64 {
	if n == 0 {
		return defaultSampleEvery
	}
	return n
}

// sampledOneIn picks one call in n (0: the default) at random.
func sampledOneIn(n uint64) bool { return rand.Uint64N(sampleEvery(n)) == 0 }

func (t *Timing) every() uint64 { return sampleEvery(t.SampleEvery) }

func (t *Timing) sample() bool { return sampledOneIn(t.SampleEvery) }

// timePublishDecision runs decide, timing it when the publisher's message
// is to be timed.
func (t *Timing) timePublishDecision(cl *mqtt.Client, decide func() bool) bool {
	if t == nil || t.Path == nil || !t.sample() {
		return decide()
	}
	if m := t.current.Load(); m != nil {
		// One at a time; a message whose fan-out never ended (a publish
		// refused after OnPublish) gives way after a second.
		if time.Since(m.timed.since) < time.Second || !t.current.CompareAndSwap(m, nil) {
			return decide()
		}
	}
	start := time.Now()
	ok := decide()
	if ok {
		t.decided.Store(&timedDecision{cl: cl, ns: int64(time.Since(start))})
	}
	return ok
}

// claim returns how long cl's publish decision took if it was just timed,
// and takes it: the OnPublish that follows times its message.
func (t *Timing) claim(cl *mqtt.Client) (time.Duration, bool) {
	if t == nil {
		return 0, false
	}
	d := t.decided.Load()
	if d == nil || d.cl != cl || !t.decided.CompareAndSwap(d, nil) {
		return 0, false
	}
	return time.Duration(d.ns), true
}

// timedPath is the publish path of a timed message so far.
type timedPath struct {
	since      time.Time    // when OnPublish began
	ns         int64        // the publish decision and OnPublish
	ticksSince time.Time    // when ticksAt was read
	ticksAt    int64        // cputicks() then
	delivery   atomic.Int64 // the deliveries' decisions, in ticks
}

// begin times m's publish path: its publish decision, and OnPublish from
// started on; the deliveries' decisions add to it.
func (t *Timing) begin(m *message, decision time.Duration, started time.Time) {
	now := time.Now()
	m.timed = &timedPath{since: started, ns: int64(decision + now.Sub(started)), ticksSince: now, ticksAt: cputicks()}
	t.current.CompareAndSwap(nil, m)
}

// deliveryStart and deliveryEnd time one delivery decision of the timed
// message in ticks: a fan-out to 30 subscribers makes 30 of them, and 60
// readings of the clock (50–90 ns each on a VM) would add as much time as
// the decisions take and stretch the very window they measure.
func deliveryStart() int64 { return cputicks() }

func (p *timedPath) deliveryEnd(start int64) {
	if d := cputicks() - start; d > 0 { // not across processors whose counters differ
		p.delivery.Add(d)
	}
}

// timing returns the message being timed if it is the one on topic.
func (t *Timing) timing(topic string) *message {
	if t == nil {
		return nil
	}
	if m := t.current.Load(); m != nil && m.topic == topic {
		return m
	}
	return nil
}

// end records the message's publish path once its fan-out is over. The
// deliveries' ticks are converted by the ticks and the time elapsed since
// begin, which contain them.
func (t *Timing) end(topic string, raw []byte) {
	m := t.timing(topic)
	if m == nil || !sameBytes(m.raw, raw) || !t.current.CompareAndSwap(m, nil) {
		return
	}
	p := m.timed
	t.Path.Observe(p.total(time.Since(p.ticksSince), cputicks()-p.ticksAt).Seconds())
}

// total is the publish path given the time and the ticks elapsed over a
// span containing all its deliveries. The deliveries count for at most the
// span (and for all of it when no ticks elapsed), so that counters that
// differ between processors make the measure err high, never low.
func (p *timedPath) total(span time.Duration, spanTicks int64) time.Duration {
	d := p.delivery.Load()
	if d <= 0 {
		return time.Duration(p.ns)
	}
	deliveries := span
	if spanTicks > 0 {
		deliveries = min(span, time.Duration(float64(d)*float64(span)/float64(spanTicks)))
	}
	return time.Duration(p.ns) + deliveries
}

// encodeStart returns when a sampled encode began, or the zero time. count
// is the subscriber's own count of encodes: a counter only its write loop
// touches is cheaper than a random number on every delivery.
func (t *Timing) encodeStart(count *atomic.Uint64) time.Time {
	if t == nil || t.Encode == nil || count.Add(1)%t.every() != 0 {
		return time.Time{}
	}
	return time.Now()
}

func (t *Timing) encodeEnd(start time.Time) {
	if !start.IsZero() {
		t.Encode.Observe(time.Since(start).Seconds())
	}
}
