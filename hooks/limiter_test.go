package hooks

import (
	"fmt"
	"sync"
	"sync/atomic"
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

// TestWindowCountsAttemptsInFlight: the sliding window counts only failures
// already recorded, never attempts in flight; once the bucket has leaked,
// guesses sent at once pass Try together and all fail in the same window.
// Serial limiter (5 per 15 minutes, no Burst): 3 failures, then 9 minutes
// later 5 guesses at once: 8 failures within 9 minutes.
func TestWindowCountsAttemptsInFlight(t *testing.T) {
	clock := &settableClock{}
	t0 := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	clock.Set(t0)
	l := NewFailureLimiter(5, 15*time.Minute, clock)
	for range 3 {
		if !l.Try("SN1") {
			t.Fatal("a fresh serial refused")
		}
		l.Done("SN1", true)
	}
	clock.Add(9 * time.Minute) // the bucket has leaked 3; the window still holds 3
	passed := 0
	for range 10 {
		if l.Try("SN1") {
			passed++
		}
	}
	for range passed {
		l.Done("SN1", true)
	}
	if n := 3 + passed; n > l.Max {
		t.Errorf("%d failures within 9 minutes, Max %d per %v (%d guesses in flight let through)", n, l.Max, l.Window, passed)
	}
}

// TestDoneAndItsFailureAreOneStep: Done(key, true) lets go of the attempt
// and records its failure under two locks; a Try between them sees neither
// and is let through. Guessers sending one guess after another on several
// connections get more than Max failures in the window.
func TestDoneAndItsFailureAreOneStep(t *testing.T) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC))
	for round := range 2000 {
		l := NewFailureLimiter(5, 15*time.Minute, clock)
		var n atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for l.Try("SN1") {
					n.Add(1)
					l.Done("SN1", true)
				}
			}()
		}
		wg.Wait()
		if n.Load() > int64(l.Max) {
			t.Fatalf("round %d: %d failures in one window, Max %d", round, n.Load(), l.Max)
		}
	}
}
