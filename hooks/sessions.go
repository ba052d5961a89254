package hooks

import (
	"strings"
	"sync"
	"sync/atomic"
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

	mu   sync.Mutex
	subs map[string]string    // subscribed filter (no $share prefix) → declared purpose; under mu
	last map[string]time.Time // topic → last delivery, for rate constraints; under mu

	// Every delivery reads these two, so they are immutable snapshots read
	// without the lock; writers replace them under mu.
	purposed atomic.Pointer[[]filterPurpose]   // the subs that declared a purpose
	pending  atomic.Pointer[map[string]string] // filters of a SUBSCRIBE being processed → purpose

	encodes atomic.Uint64 // PUBLISH packets encoded for the client (Timing samples by it)
}

// filterPurpose is one subscription that declared a purpose.
type filterPurpose struct{ filter, purpose string }

func newSession(p policies.Principal, admin bool, purpose string) *session {
	return &session{principal: p, admin: admin, purpose: purpose, subs: map[string]string{}}
}

// purposes lists the purposes under which a delivery on topic is asked
// for: those of the client's subscriptions matching it, else the CONNECT one.
func (s *session) purposes(topic string, buf []string) []string {
	if fps := s.purposed.Load(); fps != nil {
		for _, fp := range *fps {
			if policies.MatchTopic(fp.filter, topic) {
				buf = append(buf, fp.purpose)
			}
		}
	}
	if len(buf) == 0 {
		buf = append(buf, s.purpose)
	}
	return buf
}

// subscribed records granted filters, or forgets them (purpose nil).
func (s *session) subscribed(filters map[string]*string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f, p := range filters {
		if p == nil {
			delete(s.subs, f)
		} else {
			s.subs[f] = *p
		}
	}
	var fps []filterPurpose
	for f, p := range s.subs {
		if p != "" {
			fps = append(fps, filterPurpose{f, p})
		}
	}
	s.purposed.Store(&fps)
}

// beginSubscribe notes the filters of a SUBSCRIBE being processed, so that
// their ACL checks can be told from deliveries; nil ends it.
func (s *session) beginSubscribe(filters map[string]string) {
	if filters == nil {
		s.pending.Store(nil)
		return
	}
	s.pending.Store(&filters)
}

// subscribing reports whether topic is a filter of a SUBSCRIBE now being
// processed for this client, and its purpose.
func (s *session) subscribing(filter string) (string, bool) {
	m := s.pending.Load()
	if m == nil {
		return "", false
	}
	p, ok := (*m)[filter]
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

// Sweep drops the records of clients mochi is done with: closed, and no
// longer the client of their id (a finished clean session, a connection
// taken over), and returns how many it dropped. The hooks keep no record for
// a closed client, but a delivery decided for a taken-over connection after
// OnSessionEstablish dropped its record and before mochi closed it leaves
// one, and with it the client and its queue; the broker sweeps every
// minute. The offline client of a persistent session stays: mochi keeps it
// under its id to queue its messages.
func (ss *Sessions) Sweep(srv *mqtt.Server) (dropped int) {
	ss.m.Range(func(k, _ any) bool {
		cl := k.(*mqtt.Client)
		if !cl.Closed() {
			return true
		}
		if cur, ok := srv.Clients.Get(cl.ID); ok && cur == cl {
			return true
		}
		if _, was := ss.m.LoadAndDelete(cl); was {
			dropped++
		}
		return true
	})
	return dropped
}

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
