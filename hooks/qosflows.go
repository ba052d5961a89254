package hooks

import "github.com/mochi-mqtt/server/v2/packets"

// ClientsOwnFlow reports whether pk, as mochi hands it to OnQosPublish,
// OnQosComplete or OnQosDropped, belongs to a QoS flow the client started
// with its own PUBLISH, rather than to a delivery to the client.
//
// The client and the server number their QoS flows independently (MQTT 5
// §2.2.1; mochi keeps them apart since patch 0014 of third_party/mochi), so
// one packet id may name a delivery in flight to the client and the
// client's own PUBLISH at once: a hook keyed by packet id must tell them
// apart, and the packet's type alone does not. mochi hands the hooks either
// its own records, which carry their creation time (a PUBACK, PUBREC or
// PUBCOMP it answers the client's flow with; a PUBLISH or PUBREL of a
// delivery), or the client's packet as read from the wire, which carries
// none (a PUBREL of the client's flow; a PUBACK, PUBREC or PUBCOMP ending a
// delivery).
func ClientsOwnFlow(pk packets.Packet) bool {
	switch pk.FixedHeader.Type {
	case packets.Pubrel:
		return pk.Created == 0
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		return pk.Created != 0
	}
	return false
}
