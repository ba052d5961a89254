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
