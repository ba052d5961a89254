package broker

import (
	"io"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"go.etcd.io/bbolt"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openState(t testing.TB, path string, interval time.Duration) *stateStore {
	t.Helper()
	s := newStateStore(path, interval)
	s.SetOpts(quiet, nil)
	if err := s.Init(nil); err != nil {
		t.Fatal(err)
	}
	return s
}

func stateClient(id string) *mqtt.Client {
	cl := &mqtt.Client{ID: id}
	cl.Properties.Username = []byte("an")
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.SessionExpiryInterval = 3600
	return cl
}

func qosPacket(id uint16, topic string) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		PacketID:    id, TopicName: topic, Payload: []byte(`{"value":21.37}`), Created: 1764100000,
	}
}

// Everything mochi reads back at start survives a clean stop, in-flight
// messages with their packet ids.
func TestStateStoreRoundTrip(t *testing.T) {
	for _, interval := range []time.Duration{0, 50 * time.Millisecond, time.Hour} {
		t.Run(interval.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mqtt.db")
			s := openState(t, path, interval)
			cl := stateClient("doctor-1")
			s.OnSessionEstablished(cl, packets.Packet{})
			s.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "things/thermo-1/data/temperature", Qos: 1}}}, []byte{1})
			s.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "things/+/data/#"}}}, []byte{0})
			s.OnUnsubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "things/+/data/#"}}})
			retained := qosPacket(0, "things/lock-1/state")
			s.OnRetainMessage(cl, retained, 1)
			s.OnRetainMessage(cl, qosPacket(0, "things/lock-1/gone"), 1)
			s.OnRetainMessage(cl, qosPacket(0, "things/lock-1/gone"), -1)
			s.now = func() time.Time { return time.Unix(1764100001, 0) } // when the delivery was decided
			s.OnQosPublish(cl, qosPacket(7, "things/thermo-1/data/temperature"), 1764100000, 0)
			s.OnQosPublish(cl, qosPacket(8, "things/thermo-1/data/temperature"), 1764100001, 0)
			s.OnQosComplete(cl, qosPacket(8, "things/thermo-1/data/temperature"))
			s.OnSysInfoTick(&system.Info{Version: "test", MessagesReceived: 42})
			gone := stateClient("gone")
			s.OnSessionEstablished(gone, packets.Packet{})
			s.OnDisconnect(gone, nil, true)
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}

			r := openState(t, path, interval)
			defer r.Stop()
			clients, err := r.StoredClients()
			if err != nil || len(clients) != 1 || clients[0].ID != "doctor-1" || string(clients[0].Username) != "an" ||
				clients[0].Properties.SessionExpiryInterval != 3600 {
				t.Errorf("clients = %+v, %v; want doctor-1 only", clients, err)
			}
			subs, err := r.StoredSubscriptions()
			if err != nil || len(subs) != 1 || subs[0].Filter != "things/thermo-1/data/temperature" || subs[0].Qos != 1 {
				t.Errorf("subscriptions = %+v, %v; want the temperature filter at QoS 1", subs, err)
			}
			ret, err := r.StoredRetainedMessages()
			if err != nil || len(ret) != 1 || ret[0].TopicName != "things/lock-1/state" || string(ret[0].Payload) != `{"value":21.37}` {
				t.Errorf("retained = %+v, %v", ret, err)
			}
			inf, err := r.StoredInflightMessages()
			if err != nil || len(inf) != 1 || inf[0].PacketID != 7 || inf[0].Client != "doctor-1" || inf[0].Sent != 1764100001 {
				t.Errorf("inflight = %+v, %v; want packet 7 of doctor-1", inf, err)
			}
			sys, err := r.StoredSysInfo()
			if err != nil || sys.Info.MessagesReceived != 42 {
				t.Errorf("sys info = %+v, %v", sys, err)
			}
		})
	}
}

// A data directory written by mochi's bolt hook (Veil before the write-behind
// store) is read back in full, in-flight packet ids restored from the keys.
func TestStateStoreReadsMochiBoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	old := new(bolt.Hook)
	old.SetOpts(quiet, nil)
	if err := old.Init(&bolt.Options{Path: path}); err != nil {
		t.Fatal(err)
	}
	cl := stateClient("nurse-1")
	old.OnSessionEstablished(cl, packets.Packet{})
	old.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "things/#", Qos: 1}}}, []byte{1})
	old.OnQosPublish(cl, qosPacket(300, "things/thermo-1/data/temperature"), 5, 0)
	old.OnRetainMessage(cl, qosPacket(0, "things/lock-1/state"), 1)
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}

	s := openState(t, path, time.Second)
	defer s.Stop()
	clients, _ := s.StoredClients()
	subs, _ := s.StoredSubscriptions()
	ret, _ := s.StoredRetainedMessages()
	inf, err := s.StoredInflightMessages()
	if len(clients) != 1 || len(subs) != 1 || len(ret) != 1 || err != nil || len(inf) != 1 || inf[0].PacketID != 300 {
		t.Fatalf("read back %d clients, %d subscriptions, %d retained, inflight %+v (%v); want one each, packet 300",
			len(clients), len(subs), len(ret), inf, err)
	}
}

// A QoS 1 message acknowledged within the interval never reaches the disk;
// without an interval each change is its own transaction, as in mochi.
func TestStateStoreWritesBehind(t *testing.T) {
	for _, c := range []struct {
		interval    time.Duration
		wantCommits int64
	}{{0, 2000}, {time.Hour, 0}} {
		s := openState(t, filepath.Join(t.TempDir(), "mqtt.db"), c.interval)
		cl := stateClient("owner-1")
		for i := range 1000 {
			pk := qosPacket(uint16(i%65535+1), "things/thermo-1/data/temperature")
			s.OnQosPublish(cl, pk, 1, 0)
			s.OnQosComplete(cl, pk)
		}
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		if got := s.commits.Load(); got != c.wantCommits {
			t.Errorf("interval %s: %d transactions for 1,000 acknowledged messages, want %d", c.interval, got, c.wantCommits)
		}
		if got := s.changes.Load(); got != 2000 {
			t.Errorf("interval %s: %d changes recorded, want 2000", c.interval, got)
		}
	}
}

// An in-flight message acknowledged before the second commit after it was
// recorded costs the file nothing; one a commit wrote is deleted from the file, also when its
// packet id is reused meanwhile, and also after a restart.
func TestStateStoreInflightLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	cl := stateClient("owner-1")
	const topic = "things/thermo-1/data/temperature"
	inFile := func(s *stateStore) map[uint16]string {
		t.Helper()
		msgs, err := s.StoredInflightMessages()
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint16]string{}
		for _, m := range msgs {
			got[m.PacketID] = string(m.Payload)
		}
		return got
	}
	commit := func(s *stateStore) {
		t.Helper()
		if err := s.commit(); err != nil {
			t.Fatal(err)
		}
	}

	// Acknowledged within the interval: nothing pending, nothing committed.
	s.OnQosPublish(cl, qosPacket(1, topic), 1, 0)
	s.OnQosComplete(cl, qosPacket(1, topic))
	if len(s.pending) != 0 {
		t.Fatalf("pending after an acknowledgement within the interval: %v", s.pending)
	}
	commit(s)
	if n := s.commits.Load(); n != 0 {
		t.Fatalf("%d transactions for a message acknowledged within the interval", n)
	}

	// The PUBACK of a client's QoS 1 publish, completed as it is written.
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7}
	s.OnQosPublish(cl, ack, 1, 0)
	if len(s.pending) != 0 {
		t.Fatalf("pending after an inbound PUBACK: %v", s.pending)
	}
	s.OnQosComplete(cl, ack)
	if len(s.pending) != 0 {
		t.Fatalf("pending after the PUBACK completed: %v", s.pending)
	}

	// Held back by the commit after it was recorded, acknowledged before
	// the next: never written.
	s.OnQosPublish(cl, qosPacket(5, topic), 1, 0)
	commit(s)
	s.OnQosComplete(cl, qosPacket(5, topic))
	commit(s)
	if n := s.commits.Load(); n != 0 {
		t.Fatalf("%d transactions for a message acknowledged before the second commit", n)
	}

	// Written by the second commit, then acknowledged: deleted from the file.
	s.OnQosPublish(cl, qosPacket(2, topic), 1, 0)
	commit(s)
	if got := inFile(s); len(got) != 0 {
		t.Fatalf("in the file after the commit it was recorded before: %v, want nothing yet", got)
	}
	commit(s)
	if got := inFile(s); len(got) != 1 || got[2] == "" {
		t.Fatalf("in the file after a second commit: %v, want packet 2", got)
	}
	s.OnQosComplete(cl, qosPacket(2, topic))
	commit(s)
	if got := inFile(s); len(got) != 0 {
		t.Fatalf("in the file after the acknowledgement: %v, want nothing", got)
	}

	// Written; acknowledged; its id reused by a message acknowledged within
	// the same interval: the file must still lose the first one.
	s.OnQosPublish(cl, qosPacket(3, topic), 1, 0)
	commit(s)
	commit(s)
	s.OnQosComplete(cl, qosPacket(3, topic))
	reused := qosPacket(3, topic)
	reused.Payload = []byte(`{"value":22}`)
	s.OnQosPublish(cl, reused, 1, 0)
	s.OnQosComplete(cl, reused)
	commit(s)
	if got := inFile(s); len(got) != 0 {
		t.Fatalf("in the file after packet id 3 was reused and acknowledged: %v, want nothing", got)
	}

	// In the file at a restart, acknowledged after it.
	s.OnQosPublish(cl, qosPacket(4, topic), 1, 0)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s = openState(t, path, time.Hour)
	defer s.Stop()
	if got := inFile(s); len(got) != 1 || got[4] == "" {
		t.Fatalf("in the file at restart: %v, want packet 4", got)
	}
	s.OnQosPublish(cl, qosPacket(4, topic), 1, 0) // mochi's resend
	s.OnQosComplete(cl, qosPacket(4, topic))
	commit(s)
	if got := inFile(s); len(got) != 0 {
		t.Fatalf("in the file after the restored message was acknowledged: %v, want nothing", got)
	}
}

// A delivery is stored with when it was decided, and a resend keeps the
// stored times: the enforcer restamps a burst's resends a second apart (to
// keep their order) and decides a message restored after a restart as of
// its delivery. A new message on a reused packet id is stored with its own;
// after a restart each is told while its message is in flight.
func TestStateStoreKeepsDeliveryTimesOfResends(t *testing.T) {
	for _, interval := range []time.Duration{0, time.Hour} {
		t.Run(interval.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mqtt.db")
			s := openState(t, path, interval)
			clock := time.Unix(1764200000, 0)
			s.now = func() time.Time { return clock }
			cl := stateClient("doctor-1")
			const topic = "things/thermo-1/data/temperature"
			first := qosPacket(1, topic) // created at 1764100000, a retained message
			s.OnQosPublish(cl, first, first.Created, 0)
			resent := first
			resent.FixedHeader.Dup, resent.Created = true, first.Created+2 // restamped
			if interval > 0 {
				// The first one in the file, the resend pending.
				if err := s.commit(); err != nil {
					t.Fatal(err)
				}
			}
			clock = clock.Add(time.Hour)
			s.OnQosPublish(cl, resent, resent.Created, 0)
			other := qosPacket(2, topic)
			s.OnQosPublish(cl, other, other.Created, 0)
			s.OnQosComplete(cl, other)
			reused := qosPacket(2, topic) // id 2 again, another message, later
			reused.Payload, reused.Created = []byte(`{"value":22}`), first.Created+5
			s.OnQosPublish(cl, reused, reused.Created, 0)
			clock = clock.Add(time.Hour)
			resentReused := reused
			resentReused.FixedHeader.Dup, resentReused.Created = true, reused.Created+1
			s.OnQosPublish(cl, resentReused, resentReused.Created, 0)
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}

			s = openState(t, path, interval)
			defer s.Stop()
			msgs, err := s.StoredInflightMessages()
			if err != nil {
				t.Fatal(err)
			}
			got := map[uint16]int64{}
			for _, m := range msgs {
				got[m.PacketID] = m.Created
			}
			if want := map[uint16]int64{1: first.Created, 2: reused.Created}; !maps.Equal(got, want) {
				t.Errorf("stored creation times %v, want %v", got, want)
			}
			for id, want := range map[uint16]int64{1: 1764200000, 2: 1764203600} {
				if r, ok := s.Restored(cl.ID, id); !ok || r.DecidedAt.Unix() != want || r.View != nil {
					t.Errorf("packet %d decided at %v, view %v (%v), want %v and none", id, r.DecidedAt.Unix(), r.View, ok, want)
				}
			}
			// Forgotten once the message is acknowledged, or its id taken by
			// another; not by a resend.
			s.OnQosPublish(cl, resent, resent.Created, 0)
			if _, ok := s.Restored(cl.ID, 1); !ok {
				t.Error("packet 1: forgotten at its resend")
			}
			s.OnQosComplete(cl, resent)
			fresh := qosPacket(2, topic)
			fresh.Payload = []byte(`{"value":23}`)
			s.OnQosPublish(cl, fresh, fresh.Created, 0)
			for _, id := range []uint16{1, 2} {
				if _, still := s.Restored(cl.ID, id); still {
					t.Errorf("packet %d: what was kept of it still told", id)
				}
			}
		})
	}
}

// The view a delivery was decided under, told by the enforcer just before
// the store records the delivery, is written with the record, kept by its
// resend, and told after a restart; "raw by live data" likewise. A view told
// for another message under the id (another payload) is not taken.
func TestStateStoreKeepsViewsOfDeliveries(t *testing.T) {
	for _, interval := range []time.Duration{0, time.Hour} {
		t.Run(interval.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mqtt.db")
			s := openState(t, path, interval)
			cl := stateClient("doctor-1")
			const topic = "things/watch-1/data/location"
			coarse := hooks.StoredView{Owner: "an", Constraints: []policies.Constraint{{Kind: "accuracy", Field: "lat", Step: 0.01}}}
			deliver := func(pk packets.Packet, v *hooks.StoredView) {
				s.KeepView(cl.ID, pk, v) // the enforcer's OnQosPublish
				s.OnQosPublish(cl, pk, pk.Created, 0)
			}
			pk := qosPacket(1, topic)
			deliver(pk, &coarse)
			resent := pk
			resent.FixedHeader.Dup = true
			s.OnQosPublish(cl, resent, resent.Created, 0) // keeps the view
			raw := qosPacket(2, topic)
			deliver(raw, nil)
			other := qosPacket(3, topic)
			s.KeepView(cl.ID, qosPacket(3, topic), &coarse) // another message's payload
			s.OnQosPublish(cl, other, other.Created, 0)
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}
			s = openState(t, path, interval)
			defer s.Stop()
			msgs, err := s.StoredInflightMessages()
			if err != nil || len(msgs) != 3 {
				t.Fatalf("restored %d messages (%v), want 3", len(msgs), err)
			}
			if r, ok := s.Restored(cl.ID, 1); !ok || r.View == nil || !reflect.DeepEqual(*r.View, coarse) || r.Raw {
				t.Errorf("packet 1: %+v (%v), want the view %+v", r, ok, coarse)
			}
			if r, ok := s.Restored(cl.ID, 2); !ok || r.View != nil || !r.Raw {
				t.Errorf("packet 2: %+v (%v), want raw", r, ok)
			}
			if r, ok := s.Restored(cl.ID, 3); !ok || r.View != nil || r.Raw {
				t.Errorf("packet 3: %+v (%v), want nothing told", r, ok)
			}
		})
	}
}

// A granted subscription is stored with the purpose its SUBSCRIBE declared,
// told after a restart; a refused one is not stored (mochi would subscribe
// it at the next start).
func TestStateStoreSubscriptionsAndPurposes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	cl := stateClient("doctor-1")
	s.OnSubscribed(cl, packets.Packet{
		Filters:    packets.Subscriptions{{Filter: "things/watch-1/data/location", Qos: 1}, {Filter: "things/lock-1/#", Qos: 1}},
		Properties: packets.Properties{User: []packets.UserProperty{{Key: "purpose", Val: "diagnosis"}}},
	}, []byte{1, packets.ErrNotAuthorized.Code})
	s.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "things/thermo-1/data/temperature"}}}, []byte{0})
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s = openState(t, path, time.Hour)
	defer s.Stop()
	subs, err := s.StoredSubscriptions()
	if err != nil {
		t.Fatal(err)
	}
	var filters []string
	for _, sub := range subs {
		filters = append(filters, sub.Filter)
	}
	slices.Sort(filters)
	if want := []string{"things/thermo-1/data/temperature", "things/watch-1/data/location"}; !slices.Equal(filters, want) {
		t.Errorf("stored subscriptions %v, want %v", filters, want)
	}
	want := []hooks.SubscriptionPurpose{{Filter: "things/watch-1/data/location", Purpose: "diagnosis"}, {Filter: "things/thermo-1/data/temperature"}}
	if got := s.Purposes(cl.ID); !slices.Equal(got, want) {
		t.Errorf("purposes %v, want %v, in the order subscribed", got, want)
	}
}

// An expired session's subscriptions and in-flight messages leave the file
// with it (mochi drops the client only); another client's stay, also one
// whose id the expired one's is a prefix of.
func TestStateStoreExpiryTakesTheSessionsRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	gone, other := stateClient("doctor-1"), stateClient("doctor-1:b")
	recordSessions(s, "b:things/+/data/#", gone, other)
	if err := s.commit(); err != nil { // some in the file, some pending
		t.Fatal(err)
	}
	s.OnQosPublish(gone, qosPacket(2, "things/thermo-1/data/temperature"), 1764100000, 0)
	s.OnClientExpired(gone)
	wantOnlyRecordsOf(t, s, path, other.ID)
}

// recordSessions records, for each of clients, its session, a
// subscription to filter and a message in flight (packet id 1).
func recordSessions(s *stateStore, filter string, clients ...*mqtt.Client) {
	for _, cl := range clients {
		s.OnSessionEstablished(cl, packets.Packet{})
		s.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}}, []byte{1})
		s.OnQosPublish(cl, qosPacket(1, "things/thermo-1/data/temperature"), 1764100000, 0)
	}
}

// wantOnlyRecordsOf stops s and checks that the file at path holds one
// client, id, with one subscription and one message in flight.
func wantOnlyRecordsOf(t *testing.T, s *stateStore, path, id string) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s = openState(t, path, time.Hour)
	defer s.Stop()
	subs, _ := s.StoredSubscriptions()
	msgs, _ := s.StoredInflightMessages()
	clients, _ := s.StoredClients()
	if len(subs) != 1 || subs[0].Client != id || len(msgs) != 1 || msgs[0].Client != id || len(clients) != 1 {
		t.Errorf("subscriptions %+v, in flight %d, clients %d; want %s's only", subs, len(msgs), len(clients), id)
	}
}

// An expiry waits for no commit (mochi expires a session under its client
// id's lock, which other ids share: a commit's fsync, slow on an SD card,
// would hold up their connections), and takes the records the commit is
// writing too.
func TestStateStoreExpiryWaitsForNoCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	gone, other := stateClient("doctor-1"), stateClient("doctor-2")
	recordSessions(s, "things/+/data/#", gone, other)
	// A commit in progress: the records out of pending, not yet in the file.
	s.commitMu.Lock()
	batch := s.takePending(false)
	expired := make(chan struct{})
	go func() {
		s.OnClientExpired(gone)
		close(expired)
	}()
	select {
	case <-expired:
	case <-time.After(10 * time.Second):
		t.Error("the expiry waited for the commit")
	}
	s.committed(batch, s.write(batch))
	s.commitMu.Unlock()
	<-expired
	wantOnlyRecordsOf(t, s, path, other.ID)
}

// A session whose expiry ran out while the broker was down is not restored
// (mochi would restart its clock), nor its subscriptions and messages: its
// own interval, or the broker's maximum for a 3.1.1 session; one whose
// interval still runs, and one connected when last stored, are.
func TestStateStoreDropsSessionsExpiredWhileDown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	s.maxExpiry = 7 * 24 * 3600
	now := time.Now().Unix()
	for _, c := range []struct {
		id      string
		stopped int64
		version byte
	}{{"gone", now - 600, 5}, {"running", now - 10, 5}, {"connected", 0, 5}, {"gone-3.1.1", now - 8*24*3600, 4}} {
		cl := stateClient(c.id)
		cl.Properties.Props.SessionExpiryInterval, cl.Properties.Props.SessionExpiryIntervalFlag = 60, true
		if cl.Properties.ProtocolVersion = c.version; c.version < 5 {
			cl.Properties.Props.SessionExpiryInterval, cl.Properties.Props.SessionExpiryIntervalFlag = 0, false // the broker's maximum
		}
		s.saveClientStopped(cl, c.stopped)
		s.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "things/+/data/#", Qos: 1}}}, []byte{1})
		s.OnQosPublish(cl, qosPacket(1, "things/thermo-1/data/temperature"), 1764100000, 0)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s = openState(t, path, time.Hour)
	defer s.Stop()
	s.maxExpiry = 7 * 24 * 3600
	clients, _ := s.StoredClients()
	subs, _ := s.StoredSubscriptions()
	msgs, _ := s.StoredInflightMessages()
	var ids []string
	for _, c := range clients {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"connected", "running"}) || len(subs) != 2 || len(msgs) != 2 {
		t.Errorf("restored clients %v, %d subscriptions, %d messages; want connected and running, 2 and 2", ids, len(subs), len(msgs))
	}
	for _, sub := range subs {
		if sub.Client == "gone" || sub.Client == "gone-3.1.1" {
			t.Error("the expired session's subscription restored")
		}
	}
}

// A connection that ends leaves its persistent session stored with when it
// ended, and so does a will sent after its delay; mochi's own disconnect of
// a session it restores at start does not (the time from before the
// restart stands).
func TestStateStoreRecordsWhenASessionsConnectionEnded(t *testing.T) {
	s := openState(t, filepath.Join(t.TempDir(), "mqtt.db"), time.Hour)
	defer s.Stop()
	x, y := net.Pipe()
	defer x.Close()
	defer y.Close()
	live, restored, willed := stateClient("live"), stateClient("restored"), stateClient("willed")
	live.Net.Conn = x
	s.saveClientStopped(restored, 1764100000)
	before := time.Now().Unix()
	s.OnDisconnect(live, nil, false)
	s.OnDisconnect(restored, packets.ErrServerShuttingDown, false)
	willed.Stop(nil) // its will sent after its delay
	s.OnWillSent(willed, packets.Packet{})
	for id, ok := range map[string]func(int64) bool{
		"live":     func(st int64) bool { return st >= before },
		"restored": func(st int64) bool { return st == 1764100000 },
		"willed":   func(st int64) bool { return st >= before },
	} {
		r, _ := s.pending[clientKey(id)].(*clientRecord)
		if r == nil || !ok(r.Stopped) {
			t.Errorf("%s: stored %+v", id, r)
		}
	}
}

// Retained commands, which a broker before commands were never retained
// kept (also mochi's bolt hook), are not handed to mochi at start and are
// deleted from the file; other retained messages stay. Also when each
// change is its own transaction (interval 0): deleted once the scan that
// found them is over.
func TestStateStoreDropsRetainedCommands(t *testing.T) {
	for _, interval := range []time.Duration{0, time.Hour} {
		t.Run(interval.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mqtt.db")
			old := new(bolt.Hook)
			old.SetOpts(quiet, nil)
			if err := old.Init(&bolt.Options{Path: path}); err != nil {
				t.Fatal(err)
			}
			cl := stateClient("ruth-app")
			for _, topic := range []string{"things/lock-1/cmd/unlock", "things/lock-1/state", "things/thermo-1/cmd/reset", "things/thermo-1/data/temperature"} {
				old.OnRetainMessage(cl, qosPacket(0, topic), 1)
			}
			if err := old.Stop(); err != nil {
				t.Fatal(err)
			}

			s := openState(t, path, interval)
			ret, err := s.StoredRetainedMessages()
			var topics []string
			for _, m := range ret {
				topics = append(topics, m.TopicName)
			}
			if want := []string{"things/lock-1/state", "things/thermo-1/data/temperature"}; err != nil || !slices.Equal(topics, want) {
				t.Errorf("retained handed to mochi: %v (%v), want %v", topics, err, want)
			}
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}
			s = openState(t, path, interval)
			defer s.Stop()
			var keys []string
			if err := s.scan(storage.RetainedKey+"_", func(k, _ []byte) { keys = append(keys, string(k)) }); err != nil {
				t.Fatal(err)
			}
			if want := []string{retainedKey("things/lock-1/state"), retainedKey("things/thermo-1/data/temperature")}; !slices.Equal(keys, want) {
				t.Errorf("retained in the file: %v, want %v", keys, want)
			}
		})
	}
}

// An in-flight message the enforcer takes out of a session (mochi calls no
// hook for it) leaves the store too.
func TestStateStoreForgetsWhatTheEnforcerDrops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	cl := stateClient("doctor-1")
	pk := qosPacket(1, "things/thermo-1/data/temperature")
	s.OnQosPublish(cl, pk, pk.Created, 0)
	if err := s.commit(); err != nil {
		t.Fatal(err)
	}
	s.Dropped(cl.ID, 1)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s = openState(t, path, time.Hour)
	defer s.Stop()
	if msgs, err := s.StoredInflightMessages(); err != nil || len(msgs) != 0 {
		t.Errorf("stored after the enforcer dropped it: %v (%v)", msgs, err)
	}
}

// In-flight keys are mochi's bolt hook's, whatever the client id's length.
func TestInflightKeyIsMochis(t *testing.T) {
	for _, c := range []struct {
		client string
		id     uint16
	}{{"owner-1", 1}, {"", 65535}, {strings.Repeat("long-client-", 12), 4096}} {
		pk := packets.Packet{PacketID: c.id}
		if got, want := inflightKey(c.client, c.id), storage.InflightKey+"_"+c.client+":"+pk.FormatID(); got != want {
			t.Errorf("inflightKey(%q, %d) = %q, want %q", c.client, c.id, got, want)
		}
	}
}

// Pending changes reach the disk within the interval, without a stop.
func TestStateStoreCommitsEachInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, 20*time.Millisecond)
	defer s.Stop()
	s.OnRetainMessage(stateClient("an"), qosPacket(0, "things/lock-1/state"), 1)
	deadline := time.Now().Add(5 * time.Second)
	for s.commits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("nothing committed within 5 s at a 20 ms interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ret, err := s.StoredRetainedMessages(); err != nil || len(ret) != 1 {
		t.Fatalf("committed retained messages = %+v, %v", ret, err)
	}
}

// A failed transaction keeps its changes for the next one, behind any newer
// change of the same key.
func TestStateStoreRetriesFailedCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	writable := s.db
	ro, err := bbolt.Open(path+".ro", 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ro.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket(stateBucket); return err })
	_ = ro.Close()
	if ro, err = bbolt.Open(path+".ro", 0o600, &bbolt.Options{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	s.db = ro
	cl := stateClient("an")
	s.OnRetainMessage(cl, qosPacket(0, "things/lock-1/state"), 1)
	s.OnRetainMessage(cl, qosPacket(0, "things/lock-1/battery"), 1)
	if err := s.commit(); err == nil {
		t.Fatal("commit to a read-only file succeeded")
	}
	newer := qosPacket(0, "things/lock-1/state")
	newer.Payload = []byte(`{"locked":true}`)
	s.OnRetainMessage(cl, newer, 1)
	_ = ro.Close()
	s.db = writable
	if err := s.commit(); err != nil {
		t.Fatal(err)
	}
	ret, _ := s.StoredRetainedMessages()
	got := map[string]string{}
	for _, m := range ret {
		got[m.TopicName] = string(m.Payload)
	}
	if len(got) != 2 || got["things/lock-1/state"] != `{"locked":true}` || got["things/lock-1/battery"] == "" {
		t.Fatalf("after the retry: %v; want both topics, the state's newer payload", got)
	}
	_ = s.Stop()
}

// BenchmarkStateQoS1: the store's cost per acknowledged QoS 1 delivery (one
// in-flight record, then its removal), committing each change (mochi's
// bolt hook) or every 100 ms (Veil's default).
func BenchmarkStateQoS1(b *testing.B) {
	for _, interval := range []time.Duration{0, 100 * time.Millisecond} {
		b.Run("sync="+interval.String(), func(b *testing.B) {
			s := openState(b, filepath.Join(b.TempDir(), "mqtt.db"), interval)
			cl := stateClient("owner-1")
			b.ResetTimer()
			for i := range b.N {
				pk := qosPacket(uint16(i%65535+1), "things/thermo-1/data/temperature")
				s.OnQosPublish(cl, pk, 1, 0)
				s.OnQosComplete(cl, pk)
			}
			b.StopTimer()
			_ = s.Stop()
		})
	}
}

// BenchmarkStateQoS1Relay is what the store does for a QoS 1 message relayed
// from one client to another: mochi acknowledges the publisher's PUBLISH
// (a flow of the publisher's own, never recorded), then delivers it.
func BenchmarkStateQoS1Relay(b *testing.B) {
	s := openState(b, filepath.Join(b.TempDir(), "mqtt.db"), 100*time.Millisecond)
	pub, sub := stateClient("thermo-1"), stateClient("owner-1")
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := uint16(i%65535 + 1)
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id, Created: 1}
		s.OnQosPublish(pub, ack, 1, 0)
		s.OnQosComplete(pub, ack)
		pk := qosPacket(id, "things/thermo-1/data/temperature")
		s.OnQosPublish(sub, pk, 1, 0)
		s.OnQosComplete(sub, pk)
	}
	b.StopTimer()
	_ = s.Stop()
}

// committedInflight reads the in-flight records in the file, as a crash
// would leave them: key → payload (no side effects on the store).
func committedInflight(t *testing.T, s *stateStore) map[string]string {
	t.Helper()
	got := map[string]string{}
	if err := s.scan(inflightPrefix, func(k, v []byte) {
		var r inflightRecord
		if err := r.UnmarshalBinary(v); err != nil {
			t.Errorf("%s: %v", k, err)
		}
		got[string(k)] = string(r.Payload)
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// An in-flight message is held back once, by the commit after it was
// recorded: a resend of it (a client reconnecting faster than the
// interval, each time given it again with DUP) does not hold it back again,
// or it never reached the file.
func TestStateStoreHoldsAnInflightMessageBackOnce(t *testing.T) {
	s := openState(t, filepath.Join(t.TempDir(), "mqtt.db"), time.Hour)
	defer s.Stop()
	cl := stateClient("flapper")
	pk := qosPacket(1, "things/thermo-1/data/temperature")
	s.OnQosPublish(cl, pk, pk.Created, 0)
	resent := pk
	resent.FixedHeader.Dup = true
	for range 3 {
		if err := s.commit(); err != nil {
			t.Fatal(err)
		}
		s.OnQosPublish(cl, resent, resent.Created, 0) // the next connection's resend
	}
	if got := committedInflight(t, s); len(got) != 1 {
		t.Fatalf("in the file after three commits and resends: %v, want the message", got)
	}
}

// A commit never leaves in the file an in-flight message acknowledged
// before it took the pending changes: a new message on its packet id,
// held back, does not keep the acknowledged one there (a crash would
// deliver it again, a QoS 2 message twice).
func TestStateStoreHeldBackMessageDoesNotKeepAnAcknowledgedOne(t *testing.T) {
	s := openState(t, filepath.Join(t.TempDir(), "mqtt.db"), time.Hour)
	defer s.Stop()
	cl := stateClient("doctor-1")
	old := qosPacket(3, "things/thermo-1/data/temperature")
	s.OnQosPublish(cl, old, old.Created, 0)
	for range 2 {
		if err := s.commit(); err != nil {
			t.Fatal(err)
		}
	}
	if got := committedInflight(t, s); len(got) != 1 {
		t.Fatalf("in the file: %v, want packet 3", got)
	}
	s.OnQosComplete(cl, old)
	reused := qosPacket(3, old.TopicName)
	reused.Payload = []byte(`{"value":22}`)
	s.OnQosPublish(cl, reused, reused.Created, 0)
	if err := s.commit(); err != nil {
		t.Fatal(err)
	}
	for k, p := range committedInflight(t, s) {
		if p == string(old.Payload) {
			t.Fatalf("%s: the acknowledged message still in the file after a commit", k)
		}
	}
}
