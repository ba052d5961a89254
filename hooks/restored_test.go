package hooks

import (
	"reflect"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/policies"
)

// A message queued at 22:00 under the coarse view, which was kept in memory
// before a restart, is written under it after the restart even when
// today's decision does not end at a time: the doctor became co-owner at
// 08:00, with no end.
func TestRestoredMessageDecidedAsOfItsTimeWhateverNow(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	if err := f.engine.PutRelationship(policies.Relationship{Thing: "sensor-1", User: "doctor", Relation: policies.RelCoOwner,
		Status: policies.StatusActive, ValidFrom: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	night := time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)
	if d := f.engine.DecideAt(policies.Request{Principal: policies.UserPrincipal("doctor"), Topic: memoTopic, Action: policies.ActRead}, night); d.View == nil || d.Expires.IsZero() {
		t.Fatalf("at night: view %v expires %v; want a timed coarse view", d.View, d.Expires)
	}
	restored := restoredDoctor(f, night.Unix(), 1)
	pk, _ := restored.State.Inflight.Get(1)
	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doctor, packets.Packet{Connect: packets.ConnectParams{Clean: false}})
	if out := h.OnPacketEncode(doctor, resent(pk)); string(out.Payload) != `{"temperature":21}` {
		t.Errorf("queued at 22:00 (coarse), resent after the restart as %s", out.Payload)
	}
}

// A clean start to a restored session keeps no view for the messages mochi
// discards (ClearInflights on a taken-over client calls OnQosDropped, which
// skips it): the new session's first delivery reuses packet id 1, and must
// not be written under the night's view of the discarded message.
func TestCleanStartToARestoredSessionKeepsNoViews(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	night := time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)
	restored := restoredDoctor(f, night.Unix(), 1)
	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doctor, packets.Packet{Connect: packets.ConnectParams{Clean: true}})
	restored.State.Inflight.Delete(1) // mochi: isTakenOver, ClearInflights (OnQosDropped skipped)
	if n := h.queued.n.Load(); n != 0 {
		t.Errorf("%d views kept after a clean start", n)
	}
	// A fresh delivery in the morning, packet id 1 of the new session.
	if !h.OnACLCheck(doctor, memoTopic, false) {
		t.Fatal("denied")
	}
	fresh := queuedPk(memoTopic, 1, false)
	doctor.State.Inflight.Set(fresh)
	if h.Provides(mqtt.OnQosPublish) {
		h.OnQosPublish(doctor, fresh, 0, 0)
	}
	if out := h.OnPacketEncode(doctor, fresh); string(out.Payload) != `{"temperature":21.37}` {
		t.Errorf("a morning delivery written as %s (the discarded night message's view)", out.Payload)
	}
}

// A restored message keeps the view of its delivery also when it is the
// view of its first resend: not acknowledged, it is resent again at a later
// takeover (no restart), when today's view may be looser.
func TestRestoredViewKeptForLaterTakeovers(t *testing.T) {
	f, clock := nightAndDay(t) // 23:00: coarse, ends at midnight
	h := f.enforcer
	night := time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)
	restored := restoredDoctor(f, night.Unix(), 1)
	pk, _ := restored.State.Inflight.Get(1)

	// First resumption after the restart, still at night.
	doc1 := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doc1, packets.Packet{Connect: packets.ConnectParams{Clean: false}})
	doc1.State.Inflight = restored.State.Inflight.Clone() // inheritClientSession
	f.server.Clients.Add(doc1)
	if out := h.OnPacketEncode(doc1, resent(pk)); string(out.Payload) != `{"temperature":21}` {
		t.Fatalf("first resend at 23:00: %s", out.Payload)
	}
	// Not acknowledged; the doctor comes back in the morning (same broker run).
	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	doc2 := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doc2, packets.Packet{Connect: packets.ConnectParams{Clean: false}})
	doc2.State.Inflight = doc1.State.Inflight.Clone()
	if out := h.OnPacketEncode(doc2, resent(pk)); string(out.Payload) != `{"temperature":21}` {
		t.Errorf("queued at 22:00 (coarse), resent at 09:00 after one unacknowledged resend as %s", out.Payload)
	}
}

// A takeover decides the session's in-flight messages under the purposes
// its subscriptions declared, not its CONNECT purpose only.
func TestTakeoverDecidesUnderSubscriptionPurposes(t *testing.T) {
	f, _ := nightAndDay(t)
	h := f.enforcer
	for _, id := range []string{"doctor-temperature", "doctor-daytime"} {
		f.engine.DeletePolicy("an", id)
	}
	if err := f.engine.PutPolicy("an", policies.Policy{ID: "diag", Priority: 10, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead}, Purposes: []string{"diagnosis"}}); err != nil {
		t.Fatal(err)
	}
	old := f.client("doctor-0", policies.UserPrincipal("doctor"))
	p := "diagnosis"
	h.sessions.get(old).subscribed(map[string]*string{"things/+/data/temperature": &p})
	if !h.OnACLCheck(old, memoTopic, false) {
		t.Fatal("delivery denied under the subscription's purpose")
	}
	old.State.Inflight.Set(queuedPk(memoTopic, 1, false))
	f.server.Clients.Add(old)
	cl := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(cl, packets.Packet{Connect: packets.ConnectParams{Clean: false}})
	if _, ok := old.State.Inflight.Get(1); !ok {
		t.Error("a message the doctor may read (purpose declared on SUBSCRIBE) was pruned at the takeover")
	}
	if !h.OnACLCheck(cl, memoTopic, false) {
		t.Error("after the takeover a live delivery is denied")
	}
}

// A message whose view the state store kept (one that depends on live
// data, whose past is not kept, cannot be decided again) is written under
// that view after a restart, whatever the decision as of its delivery; one
// whose stored view no longer compiles is not written at all.
func TestRestoredMessageWrittenUnderItsStoredView(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	morning := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC) // exact by day
	restored := restoredDoctor(f, morning.Add(-time.Hour).Unix(), 1, 2, 3)
	h.state = &restoredStore{client: "doctor-0", of: map[uint16]RestoredDelivery{
		1: {DecidedAt: morning.Add(-time.Hour), View: &StoredView{Owner: "an",
			Constraints: []policies.Constraint{{Kind: "accuracy", Field: "temperature", Step: 1}}}},
		2: {DecidedAt: morning.Add(-time.Hour)},
		3: {DecidedAt: morning.Add(-time.Hour), View: &StoredView{Owner: "an",
			Constraints: []policies.Constraint{{Kind: "accuracy", Field: "temperature", Step: -1}}}},
	}}
	clock.Set(morning)
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doctor, packets.Packet{Connect: packets.ConnectParams{Clean: false}})
	expectResent(t, h, doctor, restored, map[uint16]string{1: `{"temperature":21}`, 2: `{"temperature":21.37}`, 3: ""})
}

// A session restored at start has the purposes its subscriptions declared,
// recorded one after another as OnSubscribed did: a filter without its
// $share prefix, the last subscription's purpose, none included.
func TestRestoredSessionPurposesInSubscriptionOrder(t *testing.T) {
	const x = "things/sensor-1/data/temperature"
	for _, c := range []struct {
		name string
		subs []SubscriptionPurpose
		want string
	}{
		{"shared with a purpose, then plain without", []SubscriptionPurpose{{"$share/g/" + x, "diagnosis"}, {x, ""}}, ""},
		{"plain without, then shared with a purpose", []SubscriptionPurpose{{x, ""}, {"$share/g/" + x, "diagnosis"}}, "diagnosis"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, _ := nightAndDay(t)
			h := f.enforcer
			h.state = &restoredStore{client: "doctor-0", purposes: c.subs}
			restored := f.server.NewClient(nil, "t", "doctor-0", false)
			restored.Properties.Username = []byte("doctor")
			restored.Stop(packets.ErrServerShuttingDown) // as loadClients does
			s := h.session(restored)
			if got := s.purposes(x, nil); len(got) != 1 || got[0] != c.want {
				t.Errorf("purposes of a delivery on %s: %q, want [%q]", x, got, c.want)
			}
		})
	}
}

// A restored message whose delivery was decided by live data is written as
// the store says it was decided (a view, or raw); one the store says nothing
// of (a record older than the stored views) is not written at all: live
// data's past is not kept, so it cannot be decided again.
func TestRestoredLiveDataDeliveryAsTheStoreTells(t *testing.T) {
	f, _ := nightAndDay(t)
	h := f.enforcer
	// Exact when sensor-1 runs hot, by live data; else whole degrees.
	if err := f.engine.PutPolicy("an", policies.Policy{ID: "hot", Priority: 1, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{memoTopic}, Actions: []policies.Action{policies.ActRead},
		When: &policies.Condition{Attr: "data.sensor-1.temperature.temperature", Op: policies.OpGt, Value: 30.0}}); err != nil {
		t.Fatal(err)
	}
	restored := restoredDoctor(f, 0, 1, 2, 3)
	h.state = &restoredStore{client: "doctor-0", of: map[uint16]RestoredDelivery{
		1: {View: &StoredView{Owner: "an", Constraints: []policies.Constraint{{Kind: "accuracy", Field: "temperature", Step: 1}}}},
		2: {Raw: true},
		3: {}, // read at start, of an older version: nothing told of how it was decided
	}}
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doctor, packets.Packet{Connect: packets.ConnectParams{Clean: false}})
	// Today (23:00, nothing hot) the doctor reads whole degrees: packet 2,
	// raw when it was delivered, is written under today's view.
	expectResent(t, h, doctor, restored, map[uint16]string{1: `{"temperature":21}`, 2: `{"temperature":21}`, 3: ""})
}

// restoredDoctor is doctor-0's session as mochi's loadClients restores it
// (a client with no connection), held by the server, with a QoS 1 message
// on memoTopic created at created (unix seconds) in flight under each id.
func restoredDoctor(f *deliveryFixture, created int64, ids ...uint16) *mqtt.Client {
	restored := f.server.NewClient(nil, "t", "doctor-0", false)
	restored.Properties.Username = []byte("doctor")
	for _, id := range ids {
		pk := queuedPk(memoTopic, id, false)
		pk.Created = created
		restored.State.Inflight.Set(pk)
	}
	f.server.Clients.Add(restored)
	return restored
}

// expectResent checks which of restored's in-flight messages are kept for
// the resend to doctor, and how each is written: want by packet id, ""
// for pruned.
func expectResent(t *testing.T, h *Enforcer, doctor, restored *mqtt.Client, want map[uint16]string) {
	t.Helper()
	for id, w := range want {
		pk, kept := restored.State.Inflight.Get(id)
		if kept != (w != "") {
			t.Errorf("packet %d kept for the resend: %v, want %v", id, kept, w != "")
			continue
		}
		if !kept {
			continue
		}
		if out := h.OnPacketEncode(doctor, resent(pk)); string(out.Payload) != w {
			t.Errorf("packet %d resent as %s, want %s", id, out.Payload, w)
		}
	}
}

// A packet the replaced connection's write loop refuses while mochi moves
// its in-flight messages to the new connection is not taken out of them:
// the new connection holds the same message under the same id.
func TestDropOnAReplacedConnectionLeavesTheMovedMessage(t *testing.T) {
	f, _ := nightAndDay(t)
	h := f.enforcer
	old := f.client("doctor-0", policies.UserPrincipal("doctor"))
	pk := inflight(old, queuedPk("things/sensor-1/data/humidity", 1, false)) // no right to it: refused at encode
	setTakenOver(old)
	if out := h.OnPacketEncode(old, pk); out.FixedHeader.Type == packets.Publish {
		t.Fatal("written")
	}
	if _, ok := old.State.Inflight.Get(1); !ok {
		t.Error("taken out of the replaced connection's in-flight messages, which mochi is moving")
	}
}

// setTakenOver marks cl as mochi does when another connection resumes its
// session (the flag is mochi's own).
func setTakenOver(cl *mqtt.Client) {
	f := reflect.ValueOf(&cl.State).Elem().FieldByName("isTakenOver")
	(*atomic.Bool)(unsafe.Pointer(f.UnsafeAddr())).Store(true)
}
