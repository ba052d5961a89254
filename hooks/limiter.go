package hooks

import (
	"sync"
	"time"

	"github.com/veil-iot/veil/policies"
)

// FailureLimiter refuses attempts on a key (a remote address, a serial, a
// user) after Max failures within Window, without checking them: a
// refusal costs no argon2id. The failures of a burst beyond Max (attempts
// in flight, Burst) also fill a bucket that leaks Max per Window, and the
// key waits for it too: guessing gets Max tries a window however they are
// sent.
type FailureLimiter struct {
	Max    int
	Window time.Duration
	// Burst is how many attempts may be in flight beyond Max (while
	// failures leave room): many devices behind one address log in at
	// once after a restart, each waiting for argon2id. Their failures
	// fill the bucket beyond Max, and take as long to leak away.
	Burst int
	clock policies.Clock

	mu      sync.Mutex
	fails   map[string]*bucket
	pending map[string]int // attempts in flight (Try … Done)
}

// bucket is a key's failures: the times of its last Max, and a level
// that leaks, as of at.
type bucket struct {
	times []time.Time
	level float64
	at    time.Time
}

// limiterKeys bounds the keys a FailureLimiter tracks. Beyond it, keys
// whose failures have leaked away go first, then keys not blocked yet, and
// blocked keys last: a flood of new keys (an IPv6 prefix's addresses,
// made-up serials) neither grows the limiter without bound nor, as a
// limiter that started over would, unblocks the keys it blocks.
const limiterKeys = 100_000

// NewFailureLimiter allows max failures per key within window.
func NewFailureLimiter(max int, window time.Duration, clock policies.Clock) *FailureLimiter {
	if clock == nil {
		clock = policies.SystemClock{}
	}
	return &FailureLimiter{Max: max, Window: window, clock: clock, fails: map[string]*bucket{}, pending: map[string]int{}}
}

// level returns key's failures now, forgetting a key whose have leaked
// away.
func (l *FailureLimiter) level(key string, now time.Time) float64 {
	b := l.fails[key]
	if b == nil {
		return 0
	}
	if d := now.Sub(b.at); d > 0 {
		b.level = max(0, b.level-d.Seconds()*float64(l.Max)/l.Window.Seconds())
		b.at = now
	}
	i := 0
	for i < len(b.times) && now.Sub(b.times[i]) > l.Window {
		i++
	}
	b.times = b.times[i:]
	if b.level == 0 && len(b.times) == 0 {
		delete(l.fails, key)
		return 0
	}
	return b.level
}

// recent is how many of key's failures fall within the window (call
// level first).
func (l *FailureLimiter) recent(key string) int {
	if b := l.fails[key]; b != nil {
		return len(b.times)
	}
	return 0
}

// Blocked reports whether key has used up its failures (its attempts in
// flight counted as failures).
func (l *FailureLimiter) Blocked(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.blocked(key)
}

// blocked: a whole failure's room is left below Max (of the level, as it
// leaks) for another try, in flight ones counted up to Max+Burst.
func (l *FailureLimiter) blocked(key string) bool {
	level := l.level(key, l.clock.Now())
	inFlight := l.pending[key]
	return l.recent(key)+inFlight > l.Max+l.Burst-1 || l.recent(key) >= l.Max ||
		level > float64(l.Max-1) || level+float64(inFlight) > float64(l.Max+l.Burst-1)
}

// Try reserves an attempt of key, which Done ends: refused while the
// key's failures and its attempts in flight reach Max. An attempt is
// counted before it is checked, not after: guesses sent at once, all
// waiting for an argon2id slot, would otherwise all pass a check of the
// failures so far.
func (l *FailureLimiter) Try(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked(key) {
		return false
	}
	l.pending[key]++
	return true
}

// Done ends an attempt Try reserved, a failure or not.
func (l *FailureLimiter) Done(key string, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.pending[key]; n > 1 {
		l.pending[key] = n - 1
	} else {
		delete(l.pending, key)
	}
	if failed {
		l.fail(key)
	}
}

// Fail records a failure of key.
func (l *FailureLimiter) Fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail(key)
}

// fail is Fail under the lock: Done records its failure in the same step
// as it lets the attempt go, or a Try in between would see neither.
func (l *FailureLimiter) fail(key string) {
	now := l.clock.Now()
	level := l.level(key, now)
	b := l.fails[key]
	if b == nil {
		b = &bucket{at: now}
		l.fails[key] = b
	}
	b.level = level + 1
	if len(b.times) == l.Max {
		b.times = b.times[1:]
	}
	b.times = append(b.times, now)
	if len(l.fails) > limiterKeys {
		l.prune(now, key)
	}
}

// prune takes the limiter down to three quarters of limiterKeys (so that
// it runs once per quarter of the bound's new keys, not per failure),
// keeping key.
func (l *FailureLimiter) prune(now time.Time, key string) {
	target := limiterKeys * 3 / 4
	for _, drop := range []func(k string) bool{
		func(k string) bool { return l.level(k, now) == 0 && l.recent(k) == 0 },
		func(k string) bool { return l.level(k, now) <= float64(l.Max-1) && l.recent(k) < l.Max },
		func(string) bool { return true },
	} {
		for k := range l.fails {
			if len(l.fails) <= target {
				return
			}
			if k != key && drop(k) {
				delete(l.fails, k)
			}
		}
	}
}
