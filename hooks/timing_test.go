package hooks_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/veil-iot/veil/hooks"
)

// durations records what a Timing observes.
type durations struct {
	mu sync.Mutex
	s  []float64
}

func (d *durations) Observe(v float64) { d.mu.Lock(); d.s = append(d.s, v); d.mu.Unlock() }

func (d *durations) get() []float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]float64(nil), d.s...)
}

// TestTimingSamplesPublishPathsAndEncodes times every publish and encode
// (SampleEvery 1) of a fan-out to 33 owners and 33 doctors.
func TestTimingSamplesPublishPathsAndEncodes(t *testing.T) {
	var path, encode durations
	f := newFanout(t, true, func(c *hooks.EnforcerConfig) {
		c.Timing = &hooks.Timing{Path: &path, Encode: &encode, SampleEvery: 1}
	})
	ctx := context.Background()
	const messages = 10
	for i := range messages {
		payload := fmt.Sprintf(`{"temperature":21.%02d,"seq":%d}`, 30+i, i)
		if _, err := f.pub.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
		waitAll(t, int64(i+1), f.raw, f.rounded)
		// The next publish is timed only once this one's fan-out has ended.
		for deadline := time.Now().Add(5 * time.Second); len(path.get()) < i+1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("publish %d: %d publish paths timed, want %d", i, len(path.get()), i+1)
			}
		}
	}
	deliveries := messages * (len(f.raw) + len(f.rounded))
	for deadline := time.Now().Add(5 * time.Second); len(encode.get()) < deliveries && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if got := len(path.get()); got != messages {
		t.Errorf("%d publish paths timed, want %d", got, messages)
	}
	if got := len(encode.get()); got != deliveries {
		t.Errorf("%d encodes timed, want one per delivery (%d)", got, deliveries)
	}
	for _, d := range append(path.get(), encode.get()...) {
		if d <= 0 || d > 1 {
			t.Fatalf("a timed duration of %gs", d)
		}
	}
}
