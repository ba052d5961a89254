package hooks

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/veil-iot/veil/policies"
)

// mochi calls OnSelectSubscribers when a shared subscription matches a
// publish, before it picks a member of each $share group and copies the
// message for every subscriber. The enforcer uses it to give each group a
// member that may receive the message (mochi alone picks any member, and
// the message is lost to the group when that one is denied), and to drop
// the denied subscribers it can see before they are copied.
//
// This only removes work: each remaining delivery is still decided by
// OnACLCheck and again by OnPacketEncode.

// OnSelectSubscribers removes the subscribers that may not receive pk and
// picks one permitted member of each shared group.
func (h *Enforcer) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
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
		h.audit(s.principal, policies.ActRead, purpose, d, 1)
	}
	h.count("delivery_denied")
	return false
}
