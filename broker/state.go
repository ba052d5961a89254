package broker

import (
	"strconv"
	"strings"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
)

// stateStore is mochi's bolt storage hook with one repair: in v2.7.9 its
// OnQosPublish stores inflight messages without their packet id (pebble and
// badger store it), so after a restart every resend fails with "missing
// packet id" and the client is disconnected on each reconnect: acknowledged
// QoS 1 messages would never be delivered. The id is part of the stored key
// ("if_{client}:{id}"), so it is restored from there.
type stateStore struct {
	*bolt.Hook
}

// StoredInflightMessages returns the stored inflight messages with their packet ids.
func (s stateStore) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := s.Hook.StoredInflightMessages()
	for i := range msgs {
		if msgs[i].PacketID != 0 {
			continue
		}
		if j := strings.LastIndexByte(msgs[i].ID, ':'); j >= 0 {
			if id, err := strconv.ParseUint(msgs[i].ID[j+1:], 10, 16); err == nil {
				msgs[i].PacketID = uint16(id)
			}
		}
	}
	return msgs, err
}
