package hooks

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/veil-iot/veil/policies"
)

// mochi copies a message for every matching subscriber and only then asks
// OnACLCheck, so a subscriber the policies deny costs a copy (and a boxed
// debug-log argument) per message; a wildcard subscriber nobody shares
// anything with costs as much as one who receives. mochi's hook for
// pruning subscribers, OnSelectSubscribers, runs only when a shared
// subscription matches. The enforcer therefore keeps one shared
// subscription on "#" for a client that never exists — the selector — so
// that the hook sees every publish outside "$": denied subscribers are
// dropped before they are copied, and each $share group gets a member that
// may receive the message (mochi alone picks any member, and the message
// is lost to the group when that one is denied).
//
// This only removes work: each remaining delivery is still decided by
// OnACLCheck and again by OnPacketEncode.
const (
	selectorClient = "$veil-selector" // CONNECT refuses client ids starting with "$"
	selectorFilter = "$share/veil-selector/#"
)

// installSelector subscribes the selector; see above.
func (h *Enforcer) installSelector() {
	if h.server != nil {
		h.server.Topics.Subscribe(selectorClient, packets.Subscription{Filter: selectorFilter})
	}
}

// OnSelectSubscribers removes the subscribers that may not receive pk and
// picks one permitted member of each shared group.
func (h *Enforcer) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	if g, ok := subs.Shared[selectorFilter]; ok {
		delete(g, selectorClient)
		if len(g) == 0 {
			delete(subs.Shared, selectorFilter)
		}
	}
	if h.server == nil || strings.HasPrefix(pk.TopicName, "$") {
		return subs
	}
	// A lone subscriber is decided by OnACLCheck alone: deciding it here
	// too would cost more than the one copy it may save.
	if len(subs.Subscriptions) > 1 {
		for id := range subs.Subscriptions {
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
