package hooks

import (
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/policies"
)

// StateStore keeps, with the sessions and in-flight messages a broker
// stores across a restart (mochi restores them without calling any hook),
// what the enforcer must know of them then: mochi's store keeps the
// messages and subscriptions, not how they were decided.
type StateStore interface {
	// Dropped is told of an in-flight message the enforcer took out of a
	// session (refused at encode, pruned before a resend), before mochi
	// may reuse its packet id: mochi calls no hook for these.
	Dropped(clientID string, packetID uint16)
	// KeepView is told the view the delivery pk was decided under, when it
	// may be looser later (it ends at a time or depends on live data, whose
	// past is not kept; nil: raw, by live data), before the store records
	// pk (the enforcer's OnQosPublish runs first), so that the record and
	// its view are written together. It must not block.
	KeepView(clientID string, pk packets.Packet, v *StoredView)
	// Restored tells what was kept of packet packetID, in flight for
	// clientID when the broker started, while it is still that message:
	// when its delivery was decided, and the view kept for it, if any.
	Restored(clientID string, packetID uint16) (RestoredDelivery, bool)
	// Purposes tells the stored subscriptions of clientID and the purposes
	// they declared, in the order they were made, for a session mochi
	// restored at start.
	Purposes(clientID string) []SubscriptionPurpose
}

// SubscriptionPurpose is a subscription's filter as subscribed and the
// purpose its SUBSCRIBE declared ("": none).
type SubscriptionPurpose struct{ Filter, Purpose string }

// StoredView is a view as stored: its constraints and whose policy they are
// (Engine.ViewFor compiles them again).
type StoredView struct {
	Owner       string                `json:"owner"`
	Constraints []policies.Constraint `json:"constraints"`
}

// RestoredDelivery is what a store kept of an in-flight delivery.
type RestoredDelivery struct {
	DecidedAt time.Time   // zero: unknown
	View      *StoredView // nil: none kept
	Raw       bool        // no view: the delivery was decided raw by live data
}
