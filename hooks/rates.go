package hooks

import (
	"math/bits"
	"strings"
	"sync"
	"time"

	"github.com/veil-iot/veil/policies"
)

// firstOfPeriod reports whether a reading taken at at (Unix ns), after one
// taken at prevAt (0: none), is the first of its period-long bucket, the
// buckets aligned to the Unix epoch: the reading a rate of one per period
// releases, live (Enforcer.rateAllows) as through $history (History.walk).
func firstOfPeriod(at, prevAt int64, period time.Duration) bool {
	return prevAt == 0 || time.Unix(0, prevAt).Before(periodStart(time.Unix(0, at), period))
}

// periodStart returns the start of the period-long bucket holding t, the
// buckets aligned to the Unix epoch: t less (t since the epoch) mod
// period. It holds for any time, also those UnixNano cannot represent
// (before 1678, after 2262), and for periods that do not divide a day.
func periodStart(t time.Time, period time.Duration) time.Time {
	p := uint64(period)
	// t since the epoch is sec·10⁹ + nsec ns: its remainder is that of
	// (sec mod p)·(10⁹ mod p) + nsec, at most 2^93, in 128 bits.
	sec := t.Unix() % int64(period)
	if sec < 0 {
		sec += int64(period)
	}
	hi, lo := bits.Mul64(uint64(sec), uint64(time.Second)%p)
	lo, carry := bits.Add64(lo, uint64(t.Nanosecond()), 0)
	return t.Add(-time.Duration(bits.Rem64(hi+carry, lo, p)))
}

// rateBook remembers, per requester and topic, until when a rate
// constraint ("one location an hour") holds back the next delivery, where
// the reading's time is not known (Enforcer.rateAllows). It is
// the requester's, not one connection's: kept per session, a reconnect, a
// second connection, or a session restored after a restart started the
// period afresh. It lives as long as the broker; after a restart the
// first delivery of each stream passes.
type rateBook struct {
	mu     sync.Mutex
	until  map[rateKey]time.Time
	pruned int // len(until) after the last pruning
}

type rateKey struct {
	who   policies.Principal
	topic string
}

// allow reports whether a delivery on topic to who is due under a rate of
// one message per period, and starts the next period if so.
func (b *rateBook) allow(who policies.Principal, topic string, period time.Duration, now time.Time) bool {
	k := rateKey{who, topic}
	b.mu.Lock()
	defer b.mu.Unlock()
	if until, ok := b.until[k]; ok && now.Before(until) {
		return false
	}
	if b.until == nil {
		b.until = map[rateKey]time.Time{}
	}
	// topic is a slice of the publisher's whole packet: the book keeps a
	// copy, not the payload (a map assignment stores the key it is given).
	k.topic = strings.Clone(topic)
	b.until[k] = now.Add(period)
	// Periods that ended hold nothing back: forget them whenever the book
	// has doubled since it was last pruned, so it stays at most twice the
	// streams whose periods are running.
	if len(b.until) > 2*b.pruned+64 {
		for k, until := range b.until {
			if !now.Before(until) {
				delete(b.until, k)
			}
		}
		b.pruned = len(b.until)
	}
	return true
}
