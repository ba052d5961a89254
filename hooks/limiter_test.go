package hooks

import (
	"fmt"
	"testing"
	"time"
)

// TestFailureLimiterUnderAFloodOfKeys: failures of more keys than the
// limiter tracks (an IPv6 prefix's addresses, made-up serials) neither
// grow it without bound nor unblock a key it blocks: it once started
// over past 100,000 keys, unblocking every address for free.
func TestFailureLimiterUnderAFloodOfKeys(t *testing.T) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC))
	l := NewFailureLimiter(10, time.Minute, clock)
	for range 10 {
		l.Fail("2001:db8::1")
	}
	for i := range 3 * limiterKeys {
		l.Fail(fmt.Sprintf("2001:db8:0:0:1::%x", i))
		if i%1000 == 0 {
			clock.Add(time.Millisecond)
		}
	}
	if !l.Blocked("2001:db8::1") {
		t.Error("an address blocked for its failures was unblocked by failures of other addresses")
	}
	if n := len(l.fails); n > limiterKeys {
		t.Errorf("the limiter tracks %d keys, more than %d", n, limiterKeys)
	}
}

// TestNoMoreThanMaxInAnyWindow: a key gets at most Max failures in any
// window however it tries (one more whenever it is let through), and Max
// failures at once refuse it for the rest of the window: the documented
// "5 per serial per 15 minutes, then refused for the rest of the window".
func TestNoMoreThanMaxInAnyWindow(t *testing.T) {
	for _, c := range []struct {
		max    int
		window time.Duration
	}{{5, 15 * time.Minute}, {20, 15 * time.Minute}} {
		clock := &settableClock{}
		t0 := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
		clock.Set(t0)
		l := NewFailureLimiter(c.max, c.window, clock)
		var at []time.Time
		for clock.Now().Sub(t0) < 2*c.window {
			if !l.Blocked("SN1") {
				l.Fail("SN1")
				at = append(at, clock.Now())
				continue
			}
			clock.Add(time.Second)
		}
		for i := range at {
			n := 0
			for j := i; j < len(at) && at[j].Sub(at[i]) < c.window; j++ {
				n++
			}
			if n > c.max {
				t.Fatalf("max %d: %d failures within one %v from %s", c.max, n, c.window, at[i])
			}
		}
		for range c.max {
			l.Fail("SN2")
		}
		clock.Add(c.window / 2)
		if !l.Blocked("SN2") {
			t.Errorf("max %d: %d failures, then let through half a window later", c.max, c.max)
		}
	}
}
