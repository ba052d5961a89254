package hooks

import (
	"strings"
	"sync"
	"time"

	"github.com/veil-iot/veil/policies"
)

// rateBook remembers, per requester and topic, until when a rate
// constraint ("one location an hour") holds back the next delivery. It is
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
