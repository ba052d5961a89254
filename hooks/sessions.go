package hooks

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

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
	subs map[string]string // subscribed filter (no $share prefix) → declared purpose; under mu

	// Every delivery reads these two, so they are immutable snapshots read
	// without the lock; writers replace them under mu.
	purposed atomic.Pointer[[]filterPurpose]          // the subs that declared a purpose
	pending  atomic.Pointer[map[string]pendingFilter] // filters of a SUBSCRIBE being processed

	encodes atomic.Uint64 // PUBLISH packets encoded for the client (Timing samples by it)

	// aliasOnly is set by the ACL check of a PUBLISH with an empty topic
	// (an alias), and taken by its OnPublish, which audits the resolved one.
	aliasOnly atomic.Bool

	// The write loop's last delivery decision: consecutive deliveries are
	// mostly of one topic, and deciding again cost a fan-out more than
	// anything else Veil does per delivery but the audit.
	encoded decisionMemo

	// The client's last publish decision: a device publishes to one topic
	// again and again, and parsing the topic and hashing the request cost
	// each publish of a fan-in about 1,000 instructions.
	wrote decisionMemo
}

// decisionMemo is a decision for one topic, valid while the engine's
// configuration is unchanged. A mutex, not atomics: each memo has nearly
// one user (the write loop; the client's read loop — a resend may encode
// from another goroutine), and replacing it must not allocate, since a
// fan-in's subscriber gets a different topic with every delivery.
type decisionMemo struct {
	clone   bool // keep a copy of the topic (a memo that is seldom replaced)
	mu      sync.Mutex
	topic   string
	act     policies.Action
	changes uint64 // Engine.Changes() before d was decided
	d       *policies.Decision
}

// get returns the decision for topic, and the action it was asked for, if
// it was the last one kept and the configuration has not changed since
// (changes is Engine.Changes()).
func (m *decisionMemo) get(topic string, changes uint64) (*policies.Decision, policies.Action) {
	m.mu.Lock()
	d, act := m.d, m.act
	if d == nil || m.changes != changes || m.topic != topic {
		d = nil
	}
	m.mu.Unlock()
	return d, act
}

// put keeps d, decided for act on topic after the configuration's
// changes-th change, unless it must be decided anew each time (it depends
// on live data or ends at a time).
func (m *decisionMemo) put(topic string, act policies.Action, changes uint64, d *policies.Decision) {
	if d.Dynamic || !d.Expires.IsZero() {
		return
	}
	if m.clone {
		// topic is a slice of the publisher's whole packet (mochi does not
		// copy it): kept, it would keep the payload too.
		topic = strings.Clone(topic)
	}
	m.mu.Lock()
	m.topic, m.act, m.changes, m.d = topic, act, changes, d
	m.mu.Unlock()
}

// filterPurpose is one subscription that declared a purpose.
type filterPurpose struct{ filter, purpose string }

func newSession(p policies.Principal, admin bool, purpose string) *session {
	s := &session{principal: p, admin: admin, purpose: purpose, subs: map[string]string{}}
	s.wrote.clone = true
	return s
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

// connectPurposeOnly reports whether every delivery to s is asked for
// under its CONNECT purpose: no subscription declared one.
func (s *session) connectPurposeOnly() bool {
	fps := s.purposed.Load()
	return fps == nil || len(*fps) == 0
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

// pendingFilter is a filter of a SUBSCRIBE being processed: its declared
// purpose, and where the bytes of each of its copies in the packet are.
type pendingFilter struct {
	purpose string
	at      []*byte
}

// beginSubscribe notes the filters of a SUBSCRIBE being processed, so that
// their ACL checks can be told from deliveries; nil ends it.
func (s *session) beginSubscribe(filters map[string]pendingFilter) {
	if filters == nil {
		s.pending.Store(nil)
		return
	}
	s.pending.Store(&filters)
}

// subscribing reports whether topic is a filter of a SUBSCRIBE now being
// processed for this client, and its purpose. It must be the filter itself,
// the very string of the SUBSCRIBE packet that mochi checks, not one equal
// to it: a delivery on a topic equal to a filter, arriving meanwhile, is a
// delivery (its rate limit and audit apply), and its topic is another
// string (the publisher's packet's).
func (s *session) subscribing(topic string) (string, bool) {
	m := s.pending.Load()
	if m == nil {
		return "", false
	}
	f, ok := (*m)[topic]
	if !ok || !slices.Contains(f.at, unsafe.StringData(topic)) {
		return "", false
	}
	return f.purpose, true
}

// Sessions maps mochi clients to Veil sessions. Every hook of every
// delivery looks its client up, and clients come and go far less often, so
// each shard is an immutable map replaced whole on a change: a lookup is a
// pointer load and a map read, with no lock and no write to shared memory
// (sync.Map cost twice the instructions). A change copies one shard, a
// 256th of the clients. The zero value is empty and ready.
type Sessions struct {
	shards [sessionShards]sessionShard
}

const sessionShards = 256

type sessionShard struct {
	mu sync.Mutex // serialises the writers of m
	m  atomic.Pointer[map[*mqtt.Client]*session]
}

// shard picks cl's shard from its address (Go's collector does not move
// heap objects): a Fibonacci hash, whose top bits mix every bit of the
// address.
func (ss *Sessions) shard(cl *mqtt.Client) *sessionShard {
	return &ss.shards[uint64(uintptr(unsafe.Pointer(cl)))*0x9E3779B97F4A7C15>>56]
}

func (ss *Sessions) get(cl *mqtt.Client) *session {
	if m := ss.shard(cl).m.Load(); m != nil {
		return (*m)[cl]
	}
	return nil
}

func (ss *Sessions) put(cl *mqtt.Client, s *session) {
	ss.shard(cl).change(func(m map[*mqtt.Client]*session) { m[cl] = s })
}

func (ss *Sessions) drop(cl *mqtt.Client) {
	if ss.get(cl) == nil {
		return // hooks drop clients they never kept; no copy for those
	}
	ss.shard(cl).change(func(m map[*mqtt.Client]*session) { delete(m, cl) })
}

// change replaces the shard's map with a copy edited by edit.
func (sh *sessionShard) change(edit func(map[*mqtt.Client]*session)) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var m map[*mqtt.Client]*session
	if old := sh.m.Load(); old != nil {
		m = maps.Clone(*old)
	}
	if m == nil {
		m = map[*mqtt.Client]*session{}
	}
	edit(m)
	sh.m.Store(&m)
}

// Sweep drops the records of clients mochi is done with: closed, and no
// longer the client of their id (a finished clean session, a connection
// taken over), and returns how many it dropped. The hooks keep no record for
// a closed client, but a delivery decided for a taken-over connection after
// OnSessionEstablish dropped its record and before mochi closed it leaves
// one, and with it the client and its queue; the broker sweeps every
// minute. The offline client of a persistent session stays: mochi keeps it
// under its id to queue its messages.
func (ss *Sessions) Sweep(srv *mqtt.Server) (dropped int) {
	for i := range ss.shards {
		sh := &ss.shards[i]
		m := sh.m.Load()
		if m == nil {
			continue
		}
		var gone []*mqtt.Client
		for cl := range *m {
			if !cl.Closed() {
				continue
			}
			if cur, ok := srv.Clients.Get(cl.ID); ok && cur == cl {
				continue
			}
			gone = append(gone, cl)
		}
		if len(gone) == 0 {
			continue
		}
		sh.change(func(m map[*mqtt.Client]*session) {
			for _, cl := range gone {
				if _, was := m[cl]; was {
					delete(m, cl)
					dropped++
				}
			}
		})
	}
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
