package hooks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func TestFanoutThreeViews(t *testing.T) {
	f := newFanout(t, true)
	ctx := context.Background()
	for i := range 20 {
		payload := fmt.Sprintf(`{"temperature":21.%02d,"seq":%d}`, 30+i, i)
		if _, err := f.pub.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", QoS: 0, Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
		// One message at a time: renderings live in a direct-mapped table,
		// and a later message that lands in the same slot before every
		// subscriber of this one has been written makes those writes render
		// again (correctly, but the count below would not be exact).
		waitAll(t, int64(i+1), f.raw, f.rounded)
	}
	time.Sleep(100 * time.Millisecond)
	for _, c := range f.raw {
		if got := c.last.Load(); got != `{"temperature":21.49,"seq":19}` {
			t.Fatalf("owner's last payload %v", got)
		}
	}
	for _, c := range f.rounded {
		if got := c.last.Load(); got != `{"temperature":21.5,"seq":19}` {
			t.Fatalf("doctor's last payload %v", got)
		}
	}
	for _, c := range f.none {
		if n := c.n.Load(); n != 0 {
			t.Fatalf("stranger received %d messages", n)
		}
	}
	// 20 messages to 100 subscribers in 3 views: each parsed once, rendered
	// once for the one rewriting view (raw needs no rendering, denied none).
	if parses, renders := f.enforcer.Stats(); parses != 20 || renders != 20 {
		t.Fatalf("parses = %d, renders = %d; want 20 and 20", parses, renders)
	}
}

// BenchmarkFanout publishes to 100 subscribers in three views through Veil's
// hooks; BenchmarkFanoutAllowAll is the same through mochi's allow-all hook
// (where the 33 strangers receive too). Both report published and delivered
// messages per second. Compare them in one run: go test -run '^$' -bench Fanout ./hooks/
func BenchmarkFanout(b *testing.B)         { benchFanout(b, true) }
func BenchmarkFanoutAllowAll(b *testing.B) { benchFanout(b, false) }

func benchFanout(b *testing.B, enforce bool) {
	f := newFanout(b, enforce)
	ctx := context.Background()
	payload := []byte(`{"temperature":21.37,"humidity":40.2,"ts":"2026-11-25T20:00:00Z"}`)
	const window = 200 // messages in flight before the publisher waits for the slowest subscriber
	b.ResetTimer()
	start := time.Now()
	for i := 1; i <= b.N; i++ {
		if _, err := f.pub.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", Payload: payload}); err != nil {
			b.Fatal(err)
		}
		if i%window == 0 {
			waitAll(b, int64(i-window), f.raw, f.rounded)
		}
	}
	groups := [][]*counter{f.raw, f.rounded}
	if !enforce {
		groups = append(groups, f.none)
	}
	waitAll(b, int64(b.N), groups...)
	elapsed := time.Since(start).Seconds()
	b.StopTimer()
	delivered := 0
	for _, g := range groups {
		delivered += len(g) * b.N
	}
	b.ReportMetric(float64(b.N)/elapsed, "published/s")
	b.ReportMetric(float64(delivered)/elapsed, "delivered/s")
}
