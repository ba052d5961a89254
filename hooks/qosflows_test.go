package hooks_test

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/hooks"
)

func TestClientsOwnFlow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		typ     byte
		stamped bool // mochi's own record (Created set), not a packet read from the client
		own     bool
	}{
		{"delivery", packets.Publish, true, false},
		{"delivery's PUBREL record", packets.Pubrel, true, false},
		{"client's PUBACK ending a delivery", packets.Puback, false, false},
		{"client's PUBREC of a delivery", packets.Pubrec, false, false},
		{"client's PUBCOMP ending a delivery", packets.Pubcomp, false, false},
		{"PUBACK answering the client's PUBLISH", packets.Puback, true, true},
		{"PUBREC answering the client's PUBLISH", packets.Pubrec, true, true},
		{"PUBCOMP answering the client's PUBREL", packets.Pubcomp, true, true},
		{"client's PUBREL of its PUBLISH", packets.Pubrel, false, true},
	} {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: tc.typ}, PacketID: 7}
		if tc.stamped {
			pk.Created = 1764000000
		}
		if got := hooks.ClientsOwnFlow(pk); got != tc.own {
			t.Errorf("%s: ClientsOwnFlow = %v, want %v", tc.name, got, tc.own)
		}
	}
}
