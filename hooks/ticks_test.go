package hooks

import (
	"testing"
	"time"
)

// observed keeps the last value a Timing observed.
type observed struct{ v float64 }

func (o *observed) Observe(v float64) { o.v = v }

// TestTimedPathCountsDeliveriesInTime times a message whose one delivery
// decision takes a known time (a sleep) and checks that the path observed
// holds it, converted from ticks, and no more than the time that passed.
func TestTimedPathCountsDeliveriesInTime(t *testing.T) {
	var path observed
	tm := &Timing{Path: &path}
	m := newMessage("things/thermo-1/data/temperature", []byte(`{}`), nil)
	began := time.Now()
	tm.begin(m, 0, began)
	if tm.timing(m.topic) != m {
		t.Fatal("the message is not being timed")
	}
	const slept = 20 * time.Millisecond
	start := deliveryStart()
	time.Sleep(slept)
	m.timed.deliveryEnd(start)
	tm.end(m.topic, m.raw)
	elapsed := time.Since(began)
	if got := time.Duration(path.v * 1e9); got < slept || got > elapsed {
		t.Fatalf("publish path %v, want between the delivery's %v and the %v that passed", got, slept, elapsed)
	}
}

func TestTimedPathTotal(t *testing.T) {
	for _, tc := range []struct {
		name            string
		ns, ticks       int64
		span            time.Duration
		spanTicks, want int64
	}{
		{"ticks at two per nanosecond", 1000, 500, 2000, 4000, 1250},
		{"ticks at one per nanosecond", 1000, 500, 2000, 2000, 1500},
		{"no deliveries", 1000, 0, 2000, 4000, 1000},
		{"no ticks elapsed: the whole span", 1000, 500, 2000, 0, 3000},
		{"more ticks in deliveries than in the span: the span", 1000, 5000, 2000, 4000, 3000},
	} {
		p := &timedPath{ns: tc.ns}
		p.delivery.Store(tc.ticks)
		if got := p.total(tc.span, tc.spanTicks); got != time.Duration(tc.want) {
			t.Errorf("%s: total %v, want %v", tc.name, got, time.Duration(tc.want))
		}
	}
}
