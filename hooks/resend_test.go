package hooks

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestKeepResendOrder: messages queued within one second come back from
// mochi's in-flight store in the order their packet ids were taken.
func TestKeepResendOrder(t *testing.T) {
	for round := 0; round < 20; round++ { // mochi's map and unstable sort would shuffle some rounds
		cl := mqtt.NewInflights()
		c := &mqtt.Client{}
		c.State.Inflight = cl
		for id := uint16(1); id <= 30; id++ {
			created := int64(1000)
			if id > 25 {
				created = 1001
			}
			cl.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id, Created: created})
		}
		keepResendOrder(c)
		for i, m := range cl.GetAll(false) {
			if int(m.PacketID) != i+1 {
				t.Fatalf("round %d: position %d resends packet %d", round, i, m.PacketID)
			}
		}
	}
}
