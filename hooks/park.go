package hooks

import (
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/veil-iot/veil/policies"
)

// Privacy by default means a new user may subscribe to things/+/data/# and
// receive nothing. mochi would still match that subscription against every
// publish, gather it and copy the message for it before the policies deny
// it: a thousand such clients would multiply the cost of every message.
// So a wildcard subscription of a user who may read nothing at all
// (policies.Engine.MayReadAnything) is granted but parked: taken out of
// mochi's topic index and kept here. After any configuration change the
// next publish reviews the parked subscriptions, before it is matched, and
// puts back those whose user may now read something — so a grant applies
// from the next message, as every configuration change does. A parked
// subscription stays in the session (and in the broker's stored state),
// so a restart or a resumed session simply matches it again.
type parking struct {
	mu       sync.Mutex
	subs     map[string]map[string]packets.Subscription // client id → filter → subscription
	reviewed atomic.Uint64                              // engine.Changes() at the last review

	memoMu sync.Mutex
	memo   map[policies.Principal]readAnything // MayReadAnything scans the configuration: once per change
}

type readAnything struct {
	changes uint64
	may     bool
}

// mayReadAnything is the engine's answer, remembered until the next
// change, and the change count it holds for (read before asking).
func (h *Enforcer) mayReadAnything(p policies.Principal) (bool, uint64) {
	n := h.engine.Changes()
	pk := &h.parking
	pk.memoMu.Lock()
	defer pk.memoMu.Unlock()
	if r, ok := pk.memo[p]; ok && r.changes == n {
		return r.may, n
	}
	may := h.engine.MayReadAnything(p)
	if pk.memo == nil {
		pk.memo = map[policies.Principal]readAnything{}
	}
	pk.memo[p] = readAnything{changes: n, may: may}
	return may, n
}

// parkIfIdle parks client's new subscription to filter when it is a
// wildcard one of a user who may read nothing; mochi has just put it in
// the topic index.
func (h *Enforcer) parkIfIdle(cl *mqtt.Client, s *session, filter string) {
	if h.server == nil || s.principal.Kind != policies.KindUser ||
		!strings.ContainsAny(filter, "+#") || strings.HasPrefix(filter, "$") {
		return
	}
	may, n := h.mayReadAnything(s.principal)
	if may {
		return
	}
	sub, ok := cl.State.Subscriptions.Get(filter)
	if !ok {
		return
	}
	pk := &h.parking
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.subs == nil {
		pk.subs = map[string]map[string]packets.Subscription{}
	}
	if pk.subs[cl.ID] == nil {
		pk.subs[cl.ID] = map[string]packets.Subscription{}
	}
	pk.subs[cl.ID][filter] = sub
	h.server.Topics.Unsubscribe(filter, cl.ID)
	if h.engine.Changes() != n {
		// The configuration changed since the answer, and a review may
		// have run before this subscription was parked: ask for another.
		pk.reviewed.Store(^uint64(0))
	}
	h.count("subscription_parked")
}

// forgetParked drops client's parked subscriptions to filters (all of them
// when filters is nil): unsubscribed, or the session ended or was taken over.
func (h *Enforcer) forgetParked(client string, filters []string) {
	pk := &h.parking
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if filters == nil {
		delete(pk.subs, client)
		return
	}
	for _, f := range filters {
		delete(pk.subs[client], f)
	}
	if len(pk.subs[client]) == 0 {
		delete(pk.subs, client)
	}
}

// reviewParked puts back the parked subscriptions whose users may now read
// something, once per configuration change. Every publish calls it before
// mochi matches subscribers; without a change it is two atomic loads.
func (h *Enforcer) reviewParked() {
	pk := &h.parking
	n := h.engine.Changes()
	if pk.reviewed.Load() == n {
		return
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.reviewed.Load() == n {
		return // another publisher reviewed meanwhile
	}
	for id, filters := range pk.subs {
		cl, ok := h.server.Clients.Get(id)
		if !ok {
			delete(pk.subs, id)
			continue
		}
		if s := h.session(cl); s != nil {
			if may, _ := h.mayReadAnything(s.principal); !may {
				continue
			}
		}
		for _, sub := range filters {
			h.server.Topics.Subscribe(id, sub)
			h.count("subscription_unparked")
		}
		delete(pk.subs, id)
	}
	pk.reviewed.Store(n)
}
