package hooks

import (
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/veil-iot/veil/policies"
)

// mochi copies a message for every matching subscriber and only then asks
// OnACLCheck, so a subscriber the policies deny costs a copy (and a boxed
// debug-log argument) per message. That adds up on wildcard filters many
// clients share, like things/+/data/#, where most matches may be denied.
// mochi's hook for pruning subscribers, OnSelectSubscribers, runs only when
// a shared subscription matches. So for every wildcard filter that at least
// two clients subscribe, the enforcer subscribes a client that never exists
// — the selector — to $share/veil-selector/{filter}: the hook then sees
// every publish that filter matches, and denied subscribers are dropped
// before they are copied. (A selector on "#" would cost every publish the
// gathering of a shared group, more than it saves where a topic has one
// subscriber.) The hook also gives each real $share group a member that may
// receive the message; mochi alone picks any member, and the message is
// lost to the group when that one is denied.
//
// This only removes work: each remaining delivery is still decided by
// OnACLCheck and again by OnPacketEncode. Bookkeeping that drifts (a
// session restored from storage, say) costs speed, never a decision.
const (
	selectorClient = "$veil-selector" // CONNECT refuses client ids starting with "$"
	selectorPrefix = "$share/veil-selector/"
)

// selectors tracks which clients subscribe each wildcard filter.
type selectors struct {
	mu      sync.Mutex
	clients map[string]map[string]struct{} // filter → client ids
}

// selectorAdd notes client's subscription to a wildcard filter; the
// filter's selector is installed with its second client.
func (h *Enforcer) selectorAdd(client, filter string) {
	if h.server == nil || !strings.ContainsAny(filter, "+#") || strings.HasPrefix(filter, "$") {
		return
	}
	sel := &h.selectors
	sel.mu.Lock()
	defer sel.mu.Unlock()
	if sel.clients == nil {
		sel.clients = map[string]map[string]struct{}{}
	}
	set := sel.clients[filter]
	if set == nil {
		set = map[string]struct{}{}
		sel.clients[filter] = set
	}
	if _, ok := set[client]; ok {
		return
	}
	set[client] = struct{}{}
	if len(set) == 2 {
		h.server.Topics.Subscribe(selectorClient, packets.Subscription{Filter: selectorPrefix + filter})
	}
}

// selectorRemove forgets client's subscription to filter; the selector
// goes when fewer than two clients are left.
func (h *Enforcer) selectorRemove(client, filter string) {
	if h.server == nil {
		return
	}
	sel := &h.selectors
	sel.mu.Lock()
	defer sel.mu.Unlock()
	set := sel.clients[filter]
	if _, ok := set[client]; !ok {
		return
	}
	delete(set, client)
	switch len(set) {
	case 1:
		h.server.Topics.Unsubscribe(selectorPrefix+filter, selectorClient)
	case 0:
		delete(sel.clients, filter)
	}
}

// OnSelectSubscribers removes the subscribers that may not receive pk and
// picks one permitted member of each shared group.
func (h *Enforcer) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	for filter, group := range subs.Shared {
		if strings.HasPrefix(filter, selectorPrefix) {
			delete(group, selectorClient)
			if len(group) == 0 {
				delete(subs.Shared, filter)
			}
		}
	}
	if h.server == nil || strings.HasPrefix(pk.TopicName, "$") {
		return subs
	}
	// Left to OnACLCheck alone: a lone subscriber (deciding it here too
	// would cost more than the one copy it may save), and one on an exact
	// topic (its right was checked at SUBSCRIBE and usually still holds).
	if len(subs.Subscriptions) > 1 {
		for id, sub := range subs.Subscriptions {
			if !strings.ContainsAny(sub.Filter, "+#") {
				continue
			}
			if cl, ok := h.server.Clients.Get(id); ok && !h.mayReceive(cl, pk.TopicName) {
				delete(subs.Subscriptions, id)
			}
		}
	}
	for filter, group := range subs.Shared {
		for id, sub := range group {
			if cl, ok := h.server.Clients.Get(id); ok && h.mayReceive(cl, pk.TopicName) {
				if prev, ok := subs.SharedSelected[id]; ok {
					sub = prev.Merge(sub)
				}
				subs.SharedSelected[id] = sub
				break
			}
		}
		// mochi would pick again among what is left.
		delete(subs.Shared, filter)
	}
	return subs
}

// mayReceive is the payload-independent part of a delivery decision: the
// policies' verdict for cl on topic. A denial is counted and audited here,
// since OnACLCheck will not see this subscriber.
func (h *Enforcer) mayReceive(cl *mqtt.Client, topic string) bool {
	if cl.Net.Inline {
		return true
	}
	s := h.session(cl)
	if s == nil {
		return false
	}
	d, purpose := h.decideReadPurpose(s, topic)
	if d.Allowed() {
		return true
	}
	if h.audit != nil {
		h.audit(s.principal, policies.ActRead, purpose, d)
	}
	h.count("delivery_denied")
	return false
}
