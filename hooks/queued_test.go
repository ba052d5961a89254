package hooks

import (
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/policies"
)

// nightAndDay is the delivery fixture where the doctor reads temperatures
// to a whole degree at night and exactly by day (before 18:00), at 23:00.
func nightAndDay(t *testing.T) (*deliveryFixture, *settableClock) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC))
	f := newDeliveryFixture(t, clock)
	coarse := doctorTemperature
	coarse.Constraints = []policies.Constraint{{Kind: "accuracy", Field: "temperature", Step: 1}}
	precise := policies.Policy{ID: "doctor-daytime", Priority: 10, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead},
		When: &policies.Condition{Attr: "env.hour", Op: policies.OpLt, Value: 18.0}}
	for _, p := range []policies.Policy{coarse, precise} {
		if err := f.engine.PutPolicy("an", p); err != nil {
			t.Fatal(err)
		}
	}
	return f, clock
}

// queuedPk is a new QoS 1 delivery: a message of its own (mochi copies the
// payload for each delivery, and its in-flight copies share it).
func queuedPk(topic string, id uint16, dup bool) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Dup: dup}, PacketID: id,
		TopicName: topic, Payload: []byte(`{"temperature":21.37}`)}
}

// resent is pk as mochi resends it: the same message, marked DUP.
func resent(pk packets.Packet) packets.Packet {
	pk.FixedHeader.Dup = true
	return pk
}

// inflight puts pk in cl's in-flight messages, as mochi does before it
// calls OnQosPublish, and returns it.
func inflight(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	cl.State.Inflight.Set(pk)
	return pk
}

// Two publishers deliver to one subscriber at once (publishToClient runs on
// each publisher's goroutine): ACL A, ACL B, OnQosPublish A, OnQosPublish B.
// Each delivery keeps its own view.
func TestInterleavedDeliveriesKeepTheirViews(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	a, b := "things/sensor-1/data/temperature", "things/sensor-2/data/temperature"
	if !h.OnACLCheck(doctor, a, false) || !h.OnACLCheck(doctor, b, false) {
		t.Fatal("denied")
	}
	pks := map[uint16]packets.Packet{7: queuedPk(a, 7, false), 8: queuedPk(b, 8, false)}
	h.OnQosPublish(doctor, pks[7], 0, 0)
	h.OnQosPublish(doctor, pks[8], 0, 0)
	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	for id, pk := range pks {
		out := h.OnPacketEncode(doctor, resent(pk))
		if string(out.Payload) != `{"temperature":21}` {
			t.Errorf("id %d queued at night, resent in the morning as %s", id, out.Payload)
		}
	}
}

// The subscriber's own QoS 2 PUBLISH: mochi calls OnQosPublish with its
// PUBREC between another publisher's ACL check and OnQosPublish. The
// delivery still keeps its view.
func TestInboundPubrecLeavesViewsAlone(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	a := "things/sensor-1/data/temperature"
	if !h.OnACLCheck(doctor, a, false) {
		t.Fatal("denied")
	}
	h.OnQosPublish(doctor, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 3}, 0, 0)
	pk := queuedPk(a, 7, false)
	h.OnQosPublish(doctor, pk, 0, 0)
	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	if out := h.OnPacketEncode(doctor, resent(pk)); string(out.Payload) != `{"temperature":21}` {
		t.Errorf("resent in the morning as %s", out.Payload)
	}
}

// A delivery dropped at encode (decision now deny) leaves no view behind: a
// later delivery reusing its packet id is written under its own decision.
func TestReusedPacketIDLeavesNoStaleView(t *testing.T) {
	f, _ := nightAndDay(t)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	a := "things/sensor-1/data/temperature"
	if !h.OnACLCheck(doctor, a, false) {
		t.Fatal("denied")
	}
	first := inflight(doctor, queuedPk(a, 7, false))
	h.OnQosPublish(doctor, first, 0, 0)
	deny := policies.Policy{ID: "deny", Priority: 0, Effect: "deny", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead}}
	if err := f.engine.PutPolicy("an", deny); err != nil {
		t.Fatal(err)
	}
	if out := h.OnPacketEncode(doctor, first); out.FixedHeader.Type == packets.Publish {
		t.Fatal("not dropped")
	}
	if _, ok := doctor.State.Inflight.Get(7); ok {
		t.Fatal("dropped, and still in flight")
	}
	// The configuration now lets the doctor read exactly, no time involved.
	for _, id := range []string{"deny", "doctor-temperature", "doctor-daytime"} {
		f.engine.DeletePolicy("an", id)
	}
	exact := policies.Policy{ID: "exact", Priority: 10, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead}}
	if err := f.engine.PutPolicy("an", exact); err != nil {
		t.Fatal(err)
	}
	if !h.OnACLCheck(doctor, a, false) {
		t.Fatal("denied")
	}
	later := inflight(doctor, queuedPk(a, 7, false))
	h.OnQosPublish(doctor, later, 0, 0)
	out := h.OnPacketEncode(doctor, later)
	if string(out.Payload) != `{"temperature":21.37}` {
		t.Errorf("a later, exact delivery reusing id 7 written as %s", out.Payload)
	}
}

// A session restored after a restart (closed client, no Veil record): a
// delivery queued for it under a timed view is remembered.
func TestRestoredSessionKeepsQueuedViews(t *testing.T) {
	f, _ := nightAndDay(t)
	h := f.enforcer
	x, y := net.Pipe()
	t.Cleanup(func() { _ = x.Close(); _ = y.Close() })
	cl := f.server.NewClient(x, "bench", "doctor-restored", false)
	cl.Properties.Username = []byte("doctor")
	cl.Stop(packets.ErrServerShuttingDown) // as loadClients does
	a := "things/sensor-1/data/temperature"
	if !h.OnACLCheck(cl, a, false) {
		t.Fatal("denied")
	}
	h.OnQosPublish(cl, queuedPk(a, 7, false), 0, 0)
	if h.queued.n.Load() == 0 {
		t.Error("the queued delivery's view was not kept for the restored session")
	}
}

// A QoS 1 delivery queued at night under the coarse view is still coarse
// when it is resent in the morning, when a live delivery would be precise:
// it is written under the view it was decided under as well as today's.
func TestQueuedDeliveryKeepsItsView(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	if !h.OnACLCheck(doctor, memoTopic, false) {
		t.Fatal("the doctor may not read the temperature at night")
	}
	night := queuedPk(memoTopic, 7, false)
	h.OnQosPublish(doctor, night, 0, 0)

	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	for _, c := range []struct {
		step string
		pk   packets.Packet
		want string
	}{
		{"queued at night, resent in the morning", resent(night), `{"temperature":21}`},
		{"decided in the morning", queuedPk(memoTopic, 8, false), `{"temperature":21.37}`},
		{"another message on the night's id (its expiry freed it)", queuedPk(memoTopic, 7, false), `{"temperature":21.37}`},
	} {
		out := h.OnPacketEncode(doctor, c.pk)
		if got := string(out.Payload); out.FixedHeader.Type != packets.Publish || got != c.want {
			t.Errorf("%s: wrote %q, want %q", c.step, got, c.want)
		}
	}
	h.OnQosComplete(doctor, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7})
	if out := h.OnPacketEncode(doctor, queuedPk(memoTopic, 7, true)); string(out.Payload) != `{"temperature":21.37}` {
		t.Errorf("after its acknowledgement, packet id 7 reused: wrote %q under the night's view", out.Payload)
	}
}

// A QoS 1 delivery queued at night before a restart has no view kept (the
// views are in memory): when the doctor comes back in the morning to the
// session mochi restored from its store, it is decided again as of when its
// delivery was decided — as the state store recorded it, else when it was
// published — and written under that view too, or pruned if it was not
// allowed then. For a retained message the two differ: it was delivered on
// a subscription, maybe long after its publish.
func TestResendAfterRestartDecidedAsOfItsTime(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	night := time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)
	evening := night.Add(-5 * time.Hour) // 17:00, still day
	// sensor-2 is off for the doctor in the evening and at night.
	nightOff := "things/sensor-2/data/temperature"
	if err := f.engine.PutPolicy("an", policies.Policy{ID: "sensor-2-nights", Priority: 5, Effect: "deny",
		Subjects: []string{"role:doctor"}, Resources: []string{nightOff}, Actions: []policies.Action{policies.ActRead},
		When: &policies.Condition{Attr: "env.hour", Op: policies.OpGe, Value: 18.0}}); err != nil {
		t.Fatal(err)
	}
	restored := f.server.NewClient(nil, "t", "doctor-0", false) // as mochi's loadClients makes it
	restored.Properties.Username = []byte("doctor")
	decided := map[uint16]time.Time{}
	queue := func(topic string, id uint16, created, delivered time.Time, retain bool) {
		pk := queuedPk(topic, id, false)
		pk.Created, pk.FixedHeader.Retain = created.Unix(), retain
		restored.State.Inflight.Set(pk)
		if !delivered.IsZero() {
			decided[id] = delivered
		}
	}
	queue(memoTopic, 1, night, night, false)
	queue(memoTopic, 2, night.Add(10*time.Hour), time.Time{}, false) // the morning, before the restart; no time recorded
	queue(memoTopic, 3, evening, night, true)                        // retained at 17:00, delivered at night
	queue(nightOff, 4, night, night, false)
	queue(nightOff, 5, night.Add(10*time.Hour), night.Add(10*time.Hour), false)
	queue(nightOff, 6, evening, night, true)       // retained at 17:00, delivered at night: not allowed then
	queue(nightOff, 7, evening, time.Time{}, true) // as 6, its delivery's time unknown: its publish's
	store := &restoredStore{client: "doctor-0", of: map[uint16]RestoredDelivery{}}
	for id, at := range decided {
		store.of[id] = RestoredDelivery{DecidedAt: at}
	}
	h.state = store
	f.server.Clients.Add(restored)

	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doctor, packets.Packet{Connect: packets.ConnectParams{Clean: false}})
	for _, c := range []struct {
		step string
		id   uint16
		want string // "": pruned
	}{
		{"queued at night", 1, `{"temperature":21}`},
		{"queued in the morning", 2, `{"temperature":21.37}`},
		{"retained in the evening, delivered at night", 3, `{"temperature":21}`},
		{"queued at night from the sensor off at night", 4, ""},
		{"queued in the morning from the sensor off at night", 5, `{"temperature":21.37}`},
		{"retained in the evening by the sensor off at night, delivered at night", 6, ""},
		{"retained in the evening by the sensor off at night, delivered when?", 7, `{"temperature":21.37}`},
	} {
		pk, kept := restored.State.Inflight.Get(c.id)
		if kept != (c.want != "") {
			t.Errorf("%s: kept for the resend %v, want %v", c.step, kept, c.want != "")
			continue
		}
		if !kept {
			continue
		}
		out := h.OnPacketEncode(doctor, resent(pk))
		if got := string(out.Payload); out.FixedHeader.Type != packets.Publish || got != c.want {
			t.Errorf("%s, resent in the morning: wrote %q, want %q", c.step, got, c.want)
		}
	}
}

// restoredStore is a StateStore as the state store is after a restart:
// it tells what it kept of client's in-flight messages.
type restoredStore struct {
	client   string
	of       map[uint16]RestoredDelivery
	purposes []SubscriptionPurpose
}

func (r *restoredStore) Purposes(id string) []SubscriptionPurpose {
	if id != r.client {
		return nil
	}
	return r.purposes
}

func (r *restoredStore) Dropped(string, uint16)                       {}
func (r *restoredStore) KeepView(string, packets.Packet, *StoredView) {}
func (r *restoredStore) Restored(id string, pid uint16) (RestoredDelivery, bool) {
	d, ok := r.of[pid]
	delete(r.of, pid)
	return d, ok && id == r.client
}
