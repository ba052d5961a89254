package broker

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// restart stops s and opens its file again, as the broker's next start.
func restart(t *testing.T, s *stateStore, path string) *stateStore {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s = openState(t, path, time.Hour)
	t.Cleanup(func() { _ = s.Stop() })
	if _, err := s.StoredInflightMessages(); err != nil {
		t.Fatal(err)
	}
	return s
}

// A late delivery to a connection a resumed session replaced (the enforcer
// ignores it too) is not stored: it would take the record of the session's
// own message with that packet id, and no drop would ever remove it.
func TestLateDeliveryToATakenOverClientNotStored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	const topic = "things/thermo-1/data/temperature"
	old, cur := stateClient("doctor-1"), stateClient("doctor-1")
	setTakenOver(old)
	mine := qosPacket(6, topic)
	s.OnQosPublish(cur, mine, mine.Created, 0)
	late := qosPacket(6, topic) // the old client's packet ids go on too
	late.Payload = []byte(`{"temperature":99.99}`)
	s.OnQosPublish(old, late, late.Created, 0)
	s.OnQosDropped(old, late) // as mochi drops it from the old client: ignored
	s = restart(t, s, path)
	msgs, err := s.StoredInflightMessages()
	if err != nil || len(msgs) != 1 || string(msgs[0].Payload) != string(mine.Payload) {
		t.Errorf("restored %+v (%v), want the session's own message 6 only", msgs, err)
	}
}

// setTakenOver marks cl as mochi does when another connection resumes its
// session (the flag is mochi's own).
func setTakenOver(cl *mqtt.Client) {
	f := reflect.ValueOf(&cl.State).Elem().FieldByName("isTakenOver")
	(*atomic.Bool)(unsafe.Pointer(f.UnsafeAddr())).Store(true)
}

// The client's own QoS 2 PUBLISH and a delivery to it with the same packet
// id are two records: the PUBREC mochi answers with does not take the
// delivery's record, and each flow's end deletes its own (mochi hands the
// hooks its own records, stamped, and the client's packets as read).
func TestClientsOwnFlowKeptApartFromTheDeliveryOfItsPacketID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	cl := stateClient("an-app")
	delivery := qosPacket(2, "things/thermo-1/data/temperature")
	s.OnQosPublish(cl, delivery, delivery.Created, 0)
	puback := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 2, Created: time.Now().Unix()}
	s.OnQosComplete(cl, puback) // the client's QoS 1 PUBLISH with id 2, acknowledged
	pubrec := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 2, Created: time.Now().Unix()}
	s.OnQosPublish(cl, pubrec, pubrec.Created, 0) // then its QoS 2 PUBLISH with id 2

	restored := func(when string, want ...byte) {
		t.Helper()
		s = restartRestoring(t, s, path, when, 2, want...)
	}
	restored("both flows open", packets.Publish, packets.Pubrec)
	s.OnQosComplete(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 2})
	restored("the client's PUBREL read", packets.Publish)
	s.OnQosPublish(cl, pubrec, pubrec.Created, 0)
	s.OnQosComplete(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 2})
	restored("the delivery's PUBACK read", packets.Pubrec)
	s.OnQosDropped(cl, pubrec) // as mochi clears an expired session's flows
	restored("dropped")
}

// The end of a client's own QoS 1 flow (mochi's PUBACK to its PUBLISH,
// which the store never records) costs the store nothing until a record of
// a client's own flow may exist: recorded, or found in the file at start.
func TestClientsOwnFlowEndSkippedUntilOneIsRecorded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	cl := stateClient("an-app")
	puback := func(id uint16) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id, Created: time.Now().Unix()}
	}
	s.OnQosComplete(cl, puback(1))
	s.OnQosDropped(cl, puback(2))
	if n := s.changes.Load(); n != 0 {
		t.Fatalf("%d changes recorded for the ends of QoS 1 flows nobody recorded, want 0", n)
	}
	pubrec := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 3, Created: time.Now().Unix()}
	s.OnQosPublish(cl, pubrec, pubrec.Created, 0)
	s.OnQosComplete(cl, puback(4))
	if n := s.changes.Load(); n != 2 {
		t.Fatalf("%d changes recorded after a PUBREC and a PUBACK, want 2", n)
	}
	s = restart(t, s, path)
	if !s.ownFlows.Load() {
		t.Fatal("a PUBREC in the file, and the store skips the ends of clients' flows")
	}
}

// A state file written before the client's own flows had keys of their own
// holds the PUBREC of a client's QoS 2 PUBLISH under the key of a delivery
// with its packet id ("IFM_{client}:{id}", as mochi's bolt hook writes it
// too). After the upgrade, the flow's end deletes it all the same (else it
// came back at every start, and answered the client's next QoS 2 PUBLISH,
// SUBSCRIBE or UNSUBSCRIBE with that id "packet identifier in use"), and a
// delivery with the id is stored beside it (else it took the PUBREC's
// record, and a restart lost the client's flow).
func TestLegacyClientsFlowRecordEndsWithItsFlow(t *testing.T) {
	for _, interval := range []time.Duration{0, time.Hour} {
		for _, delivered := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v delivery %v", interval, delivered), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "mqtt.db")
				s := openState(t, path, interval)
				cl := stateClient("an-app")
				pubrec := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 2, Created: time.Now().Unix()}
				legacy := inflightKey(cl.ID, pubrec.PacketID)
				s.record(legacy, &inflightRecord{Message: storedMessage(legacy, storage.InflightKey, cl.ID, pubrec, pubrec.Created)})

				restored := func(when string, want ...byte) {
					t.Helper()
					s = restartRestoring(t, s, path, when, 2, want...)
				}
				restored("the legacy record", packets.Pubrec)
				if !delivered {
					s.OnQosComplete(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 2}) // the client's PUBREL, as read
					restored("the client's PUBREL read")
					return
				}
				delivery := qosPacket(2, "things/thermo-1/data/temperature")
				s.OnQosPublish(cl, delivery, delivery.Created, 0)
				restored("a delivery with its packet id", packets.Publish, packets.Pubrec)
				s.OnQosComplete(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 2})
				restored("the client's PUBREL read", packets.Publish)
				s.OnQosComplete(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 2})
				restored("the delivery's PUBACK read")
			})
		}
	}
}

// restartRestoring restarts s (restart) and fails unless the in-flight
// records it restores are of the packet types want, all with packet id id.
func restartRestoring(t *testing.T, s *stateStore, path, when string, id uint16, want ...byte) *stateStore {
	t.Helper()
	s = restart(t, s, path)
	msgs, err := s.StoredInflightMessages()
	var got []byte
	for _, m := range msgs {
		got = append(got, m.FixedHeader.Type)
		if m.PacketID != id {
			t.Errorf("%s: restored %d with packet id %d, want %d", when, m.FixedHeader.Type, m.PacketID, id)
		}
	}
	slices.Sort(got)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("%s: restored packet types %v (%v), want %v", when, got, err, want)
	}
	return s
}

// The move of a legacy record to its own key at start is one commit: the
// periodic commit after it does not delete the old key while it holds the
// new one back (a crash then lost the client's flow).
func TestLegacyClientsFlowRecordMovedInOneCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	cl := stateClient("an-app")
	pubrec := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 2, Created: time.Now().Unix()}
	legacy := inflightKey(cl.ID, pubrec.PacketID)
	s.record(legacy, &inflightRecord{Message: storedMessage(legacy, storage.InflightKey, cl.ID, pubrec, pubrec.Created)})
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s = openState(t, path, time.Hour)
	defer s.Stop()
	if _, err := s.StoredInflightMessages(); err != nil {
		t.Fatal(err)
	}
	if err := s.commit(); err != nil {
		t.Fatal(err)
	}
	if got := committedInflight(t, s); len(got) != 1 {
		t.Fatalf("in the file after the first commit: %v, want the PUBREC under one key", got)
	}
}
