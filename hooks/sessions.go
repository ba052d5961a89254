package hooks

import (
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/veil-iot/veil/policies"
)

// session is what Veil knows about one connected (or persisted) client.
type session struct {
	principal policies.Principal
	admin     bool
	purpose   string // declared on CONNECT (user property "purpose")

	mu      sync.Mutex
	subs    map[string]string    // subscribed filter (no $share prefix) → declared purpose
	pending map[string]string    // filters of a SUBSCRIBE being processed → purpose
	last    map[string]time.Time // topic → last delivery, for rate constraints
}

func newSession(p policies.Principal, admin bool, purpose string) *session {
	return &session{principal: p, admin: admin, purpose: purpose, subs: map[string]string{}}
}

// purposes lists the purposes under which a delivery on topic is asked
// for: those of the client's subscriptions matching it, else the CONNECT one.
func (s *session) purposes(topic string, buf []string) []string {
	s.mu.Lock()
	for f, p := range s.subs {
		if p != "" && policies.MatchTopic(f, topic) {
			buf = append(buf, p)
		}
	}
	s.mu.Unlock()
	if len(buf) == 0 {
		buf = append(buf, s.purpose)
	}
	return buf
}

// subscribing reports whether topic is a filter of a SUBSCRIBE now being
// processed for this client, and its purpose.
func (s *session) subscribing(filter string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pending[filter]
	return p, ok
}

// allowRate reports whether a delivery on topic is due under a rate of one
// message per period, and records it if so.
func (s *session) allowRate(topic string, period time.Duration, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = map[string]time.Time{}
	}
	if last, ok := s.last[topic]; ok && now.Sub(last) < period {
		return false
	}
	s.last[topic] = now
	return true
}

// Sessions maps mochi clients to Veil sessions.
type Sessions struct {
	m sync.Map // *mqtt.Client → *session
}

func (ss *Sessions) get(cl *mqtt.Client) *session {
	if v, ok := ss.m.Load(cl); ok {
		return v.(*session)
	}
	return nil
}

func (ss *Sessions) put(cl *mqtt.Client, s *session) { ss.m.Store(cl, s) }
func (ss *Sessions) drop(cl *mqtt.Client)            { ss.m.Delete(cl) }

// Principal returns the principal a client authenticated as.
func (ss *Sessions) Principal(cl *mqtt.Client) (policies.Principal, bool) {
	if s := ss.get(cl); s != nil {
		return s.principal, true
	}
	return policies.Principal{}, false
}

// stripShare removes a "$share/{group}/" prefix from a filter.
func stripShare(filter string) (string, bool) {
	rest, ok := strings.CutPrefix(filter, "$share/")
	if !ok {
		return filter, false
	}
	_, f, ok := strings.Cut(rest, "/")
	if !ok {
		return "", true
	}
	return f, true
}

// userProperty returns the value of the first user property named key.
func userProperty(props []packets.UserProperty, key string) string {
	for _, p := range props {
		if p.Key == key {
			return p.Val
		}
	}
	return ""
}
