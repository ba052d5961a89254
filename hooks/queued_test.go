package hooks

import (
	"net"
	"testing"
	"time"

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

func queuedPk(topic string, id uint16, dup bool) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Dup: dup}, PacketID: id,
		TopicName: topic, Payload: []byte(`{"temperature":21.37}`)}
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
	h.OnQosPublish(doctor, queuedPk(a, 7, false), 0, 0)
	h.OnQosPublish(doctor, queuedPk(b, 8, false), 0, 0)
	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	for id, topic := range map[uint16]string{7: a, 8: b} {
		out := h.OnPacketEncode(doctor, queuedPk(topic, id, true))
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
	h.OnQosPublish(doctor, queuedPk(a, 7, false), 0, 0)
	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	if out := h.OnPacketEncode(doctor, queuedPk(a, 7, true)); string(out.Payload) != `{"temperature":21}` {
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
	h.OnQosPublish(doctor, queuedPk(a, 7, false), 0, 0)
	deny := policies.Policy{ID: "deny", Priority: 0, Effect: "deny", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead}}
	if err := f.engine.PutPolicy("an", deny); err != nil {
		t.Fatal(err)
	}
	if out := h.OnPacketEncode(doctor, queuedPk(a, 7, false)); out.FixedHeader.Type == packets.Publish {
		t.Fatal("not dropped")
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
	h.OnQosPublish(doctor, queuedPk(a, 7, false), 0, 0)
	out := h.OnPacketEncode(doctor, queuedPk(a, 7, false))
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
	h.OnQosPublish(doctor, queuedPk(memoTopic, 7, false), 0, 0)

	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	for _, c := range []struct {
		step string
		id   uint16
		want string
	}{
		{"queued at night, resent in the morning", 7, `{"temperature":21}`},
		{"decided in the morning", 8, `{"temperature":21.37}`},
	} {
		out := h.OnPacketEncode(doctor, queuedPk(memoTopic, c.id, true))
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
// session mochi restored from its store, it is decided as of when it was
// published, and written under the night's view too, or pruned if it was
// not allowed then; a retained one may have been delivered any time since
// its publish, so it is written under the view of that time as well, or
// pruned if any of it denied it.
func TestResendAfterRestartDecidedAsOfItsTime(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	night := time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)
	// sensor-2 is off for the doctor in the evening and at night.
	nightOff := "things/sensor-2/data/temperature"
	if err := f.engine.PutPolicy("an", policies.Policy{ID: "sensor-2-nights", Priority: 5, Effect: "deny",
		Subjects: []string{"role:doctor"}, Resources: []string{nightOff}, Actions: []policies.Action{policies.ActRead},
		When: &policies.Condition{Attr: "env.hour", Op: policies.OpGe, Value: 18.0}}); err != nil {
		t.Fatal(err)
	}
	restored := f.server.NewClient(nil, "t", "doctor-0", false) // as mochi's loadClients makes it
	restored.Properties.Username = []byte("doctor")
	queue := func(topic string, id uint16, created time.Time, retain bool) {
		pk := queuedPk(topic, id, false)
		pk.Created, pk.FixedHeader.Retain = created.Unix(), retain
		restored.State.Inflight.Set(pk)
	}
	queue(memoTopic, 1, night, false)
	queue(memoTopic, 2, night.Add(10*time.Hour), false) // published in the morning, before the restart
	queue(memoTopic, 3, night, true)
	queue(nightOff, 4, night, false)
	queue(nightOff, 5, night.Add(10*time.Hour), false)
	queue(nightOff, 6, night.Add(-5*time.Hour), true) // retained at 17:00, maybe delivered at night
	f.server.Clients.Add(restored)

	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doctor, packets.Packet{Connect: packets.ConnectParams{Clean: false}})
	for _, c := range []struct {
		step string
		id   uint16
		want string
	}{
		{"queued at night", 1, `{"temperature":21}`},
		{"queued in the morning", 2, `{"temperature":21.37}`},
		{"retained, queued at night", 3, `{"temperature":21}`},
		{"queued in the morning from the sensor off at night", 5, `{"temperature":21.37}`},
	} {
		pk := queuedPk(memoTopic, c.id, true)
		out := h.OnPacketEncode(doctor, pk)
		if got := string(out.Payload); out.FixedHeader.Type != packets.Publish || got != c.want {
			t.Errorf("%s, resent in the morning: wrote %q, want %q", c.step, got, c.want)
		}
	}
	for id, want := range map[uint16]bool{1: true, 2: true, 3: true, 4: false, 5: true, 6: false} {
		if _, kept := restored.State.Inflight.Get(id); kept != want {
			t.Errorf("packet %d kept for the resend: %v, want %v", id, kept, want)
		}
	}
}
