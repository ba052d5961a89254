package hooks

import (
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/policies"
)

type settableClock struct{ ns atomic.Int64 }

func (c *settableClock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *settableClock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *settableClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

const memoTopic = "things/sensor-1/data/temperature"

// encode runs OnPacketEncode for a delivery of payload on memoTopic to cl,
// and returns what would be written, or false when nothing would.
func encode(h *Enforcer, cl *mqtt.Client, payload string) (string, bool) {
	out := h.OnPacketEncode(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: memoTopic, Payload: []byte(payload)})
	return string(out.Payload), out.FixedHeader.Type == packets.Publish
}

// The write loop keeps its last decision; a change of the configuration
// or of the topic, and a decision that ends at a time, must still be
// decided anew for the very next delivery.
func TestEncodeDecisionFollowsChangesAndTime(t *testing.T) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 26, 17, 59, 0, 0, time.UTC))
	f := newDeliveryFixture(t, clock)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	want := func(step, payload, got string, ok bool, wantOK bool) {
		t.Helper()
		if ok != wantOK || (wantOK && got != payload) {
			t.Fatalf("%s: encoded %q, delivered %v; want %q, %v", step, got, ok, payload, wantOK)
		}
	}
	got, ok := encode(h, doctor, `{"temperature":21.37}`)
	want("allowed", `{"temperature":21.4}`, got, ok, true)
	got, ok = encode(h, doctor, `{"temperature":21.31}`)
	want("allowed again", `{"temperature":21.3}`, got, ok, true)

	deny := doctorTemperature
	deny.Effect, deny.Constraints = "deny", nil
	if err := f.engine.PutPolicy("an", deny); err != nil {
		t.Fatal(err)
	}
	got, ok = encode(h, doctor, `{"temperature":21.37}`)
	want("after the deny", "", got, ok, false)
	if err := f.engine.PutPolicy("an", doctorTemperature); err != nil {
		t.Fatal(err)
	}
	got, ok = encode(h, doctor, `{"temperature":21.37}`)
	want("allowed once more", `{"temperature":21.4}`, got, ok, true)

	// Until 18:00 only: the decision ends at a time, so it is never kept.
	until18 := doctorTemperature
	until18.When = &policies.Condition{Attr: "env.hour", Op: policies.OpLt, Value: 18.0}
	if err := f.engine.PutPolicy("an", until18); err != nil {
		t.Fatal(err)
	}
	got, ok = encode(h, doctor, `{"temperature":21.37}`)
	want("at 17:59", `{"temperature":21.4}`, got, ok, true)
	clock.Add(2 * time.Minute)
	got, ok = encode(h, doctor, `{"temperature":21.37}`)
	want("at 18:01, nothing else changed", "", got, ok, false)
}

// A fan-out asks the engine once per principal and purpose: subscribers
// of one principal that declared different purposes on CONNECT must each
// get their own answer, whoever is asked first, and a denied principal
// must stay denied for every one of its subscribers.
func TestFanoutDecisionsPerPrincipalAndPurpose(t *testing.T) {
	f := newDeliveryFixture(t, nil)
	forDiagnosis := doctorTemperature
	forDiagnosis.Purposes = []string{"diagnosis"}
	if err := f.engine.PutPolicy("an", forDiagnosis); err != nil {
		t.Fatal(err)
	}
	h := f.enforcer
	sensor := f.client("sensor-1", policies.ThingPrincipal("sensor-1"))
	withPurpose := func(id, purpose string) *mqtt.Client {
		cl := f.client(id, policies.UserPrincipal("doctor"))
		f.sessions.put(cl, newSession(policies.UserPrincipal("doctor"), false, purpose))
		return cl
	}
	type sub struct {
		cl      *mqtt.Client
		allowed bool
	}
	var subs []sub
	for i := range 3 {
		subs = append(subs,
			sub{withPurpose("diagnosing-"+string(rune('a'+i)), "diagnosis"), true},
			sub{withPurpose("curious-"+string(rune('a'+i)), ""), false},
			sub{f.client("stranger-"+string(rune('a'+i)), policies.UserPrincipal("stranger")), false})
	}
	for round, order := range [][]int{{0, 1, 2, 3, 4, 5, 6, 7, 8}, {8, 7, 6, 5, 4, 3, 2, 1, 0}, {1, 4, 7, 0, 3, 6, 2, 5, 8}} {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: memoTopic, Payload: []byte(`{"temperature":21.37}`)}
		if !h.OnACLCheck(sensor, memoTopic, true) {
			t.Fatal("the sensor may not publish its own reading")
		}
		if _, err := h.OnPublish(sensor, pk); err != nil {
			t.Fatal(err)
		}
		for _, i := range order {
			if got := h.OnACLCheck(subs[i].cl, memoTopic, false); got != subs[i].allowed {
				t.Fatalf("round %d, subscriber %d (%s): allowed = %v, want %v", round, i, subs[i].cl.ID, got, subs[i].allowed)
			}
		}
		h.OnPublished(sensor, pk)
	}
}

// auditTally adds up what an enforcer tells its audit, by who and effect
// (by key, when set).
type auditTally struct {
	mu  sync.Mutex
	n   map[string]int64
	key func(policies.Principal, policies.Action, *policies.Decision) string
}

func (a *auditTally) record(p policies.Principal, act policies.Action, _ string, d *policies.Decision, n int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[string]int64{}
	}
	k := p.ID + " " + d.Reason()
	if a.key != nil {
		k = a.key(p, act, d)
	}
	a.n[k] += n
}

// fanOut publishes one message of pub on its topic to every one of subs,
// as mochi calls the hooks.
func fanOut(t *testing.T, h *Enforcer, pub *mqtt.Client, subs []*mqtt.Client) {
	topic := "things/" + pub.ID[:strings.IndexByte(pub.ID+"#", '#')] + "/data/temperature"
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: []byte(`{"temperature":21.37}`)}
	if !h.OnACLCheck(pub, topic, true) {
		t.Error("publish refused")
		return
	}
	if _, err := h.OnPublish(pub, pk); err != nil {
		t.Error(err)
		return
	}
	for _, sub := range subs {
		h.OnACLCheck(sub, topic, false)
	}
	h.OnPublished(pub, pk)
}

// A fan-out counts its deliveries for the audit in the decisions it keeps
// and records them when it ends. Every delivery must be counted exactly
// once: with publishers at once on different topics and on one topic (whose
// messages take each other's place while their fan-outs run).
func TestFanoutAuditCountsEveryDelivery(t *testing.T) {
	var tally auditTally
	f := newAuditedFixture(t, nil, tally.record)
	var subs []*mqtt.Client
	for i := range 10 {
		subs = append(subs, f.client(fmt.Sprintf("an-%d", i), policies.UserPrincipal("an")),
			f.client(fmt.Sprintf("doctor-%d", i), policies.UserPrincipal("doctor")),
			f.client(fmt.Sprintf("stranger-%d", i), policies.UserPrincipal("stranger")))
	}
	// Client ids "sensor-5#a" and "sensor-5#b": two connections of one thing.
	var pubs []*mqtt.Client
	for _, id := range []string{"sensor-1", "sensor-2", "sensor-3", "sensor-5#a", "sensor-5#b"} {
		pubs = append(pubs, f.client(id, policies.ThingPrincipal(id[:strings.IndexByte(id+"#", '#')])))
	}
	const messages = 200
	var wg sync.WaitGroup
	for _, pub := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range messages {
				fanOut(t, f.enforcer, pub, subs)
			}
		}()
	}
	wg.Wait()
	deliveries := int64(len(pubs) * messages * 10)
	for who, reason := range map[string]string{"an": "rule:owner", "doctor": "policy:doctor-temperature", "stranger": "deny:default"} {
		if got := tally.n[who+" "+reason]; got != deliveries {
			t.Errorf("%s: %d deliveries audited as %s, want %d (all: %v)", who, got, reason, deliveries, tally.n)
		}
	}
}

// A message that another topic's takes the place of in the middle of its
// fan-out records what it counted then; its later deliveries are recorded
// one by one.
func TestFanoutAuditSurvivesEviction(t *testing.T) {
	var tally auditTally
	f := newAuditedFixture(t, nil, tally.record)
	h := f.enforcer
	a := "things/sensor-1/data/temperature"
	var b string // a topic sharing a's slot in the table of fan-outs
	for i := 0; b == ""; i++ {
		if topic := fmt.Sprintf("things/t%d/data/temperature", i); h.fanouts.slot(topic) == h.fanouts.slot(a) {
			b = topic
		}
	}
	doctors := []*mqtt.Client{f.client("doctor-0", policies.UserPrincipal("doctor")), f.client("doctor-1", policies.UserPrincipal("doctor")),
		f.client("doctor-2", policies.UserPrincipal("doctor")), f.client("doctor-3", policies.UserPrincipal("doctor"))}
	sensor := f.client("sensor-1", policies.ThingPrincipal("sensor-1"))
	pa := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: a, Payload: []byte(`{"temperature":21.37}`)}
	if _, err := h.OnPublish(sensor, pa); err != nil {
		t.Fatal(err)
	}
	for _, d := range doctors[:3] { // the second and third are counted in the message
		h.OnACLCheck(d, a, false)
	}
	h.auditFanout(h.fanouts.begin(newMessage(b, []byte(`{}`), nil))) // as OnPublish of b does
	h.OnACLCheck(doctors[3], a, false)
	h.OnPublished(sensor, pa)
	if got := tally.n["doctor policy:doctor-temperature"]; got != 4 {
		t.Fatalf("%d deliveries audited, want 4 (all: %v)", got, tally.n)
	}
}

// A message whose fan-out never ended (mochi calls no OnPublished when the
// publisher's acknowledgement fails) stays in the table: later deliveries
// that find it (retained ones) must see every change of the configuration,
// and the sweeps must hand its counts to the audit.
func TestUnendedFanout(t *testing.T) {
	var tally auditTally
	f := newAuditedFixture(t, nil, tally.record)
	h := f.enforcer
	sensor := f.client("sensor-1", policies.ThingPrincipal("sensor-1"))
	var doctors []*mqtt.Client
	for i := range 4 {
		doctors = append(doctors, f.client(fmt.Sprintf("doctor-%d", i), policies.UserPrincipal("doctor")))
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: memoTopic, Payload: []byte(`{"temperature":21.37}`)}
	if _, err := h.OnPublish(sensor, pk); err != nil {
		t.Fatal(err)
	}
	for _, d := range doctors[:3] {
		if !h.OnACLCheck(d, memoTopic, false) {
			t.Fatal("the doctor was refused before the change")
		}
	}
	stop := policies.Policy{ID: "stop-doctor", Priority: 0, Effect: "deny", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead}}
	if err := f.engine.PutPolicy("an", stop); err != nil {
		t.Fatal(err)
	}
	if h.OnACLCheck(doctors[3], memoTopic, false) {
		t.Fatal("a delivery decided after the change used the decision kept before it")
	}
	counted := func() int64 {
		tally.mu.Lock()
		defer tally.mu.Unlock()
		return tally.n["doctor policy:doctor-temperature"]
	}
	if got := counted(); got != 1 { // the first one; the next two are in the message
		t.Fatalf("%d allowed deliveries audited before the sweeps, want 1", got)
	}
	h.SweepFanouts(false)
	if got := counted(); got != 1 {
		t.Fatalf("%d audited after the first sweep, want 1 (a message is closed the second time)", got)
	}
	h.SweepFanouts(false)
	if got := counted(); got != 3 {
		t.Fatalf("%d audited after the second sweep, want 3", got)
	}
	if got := tally.n["doctor policy:stop-doctor"]; got != 1 {
		t.Fatalf("%d denied deliveries audited, want 1 (all: %v)", got, tally.n)
	}
	if m := h.fanouts.current(memoTopic); m != nil {
		t.Fatal("the swept message is still in the table")
	}
}

// A subscription's purpose decides the deliveries it matches, and once it
// is gone the CONNECT purpose decides again: the write loop must not keep
// what it decided under the subscription's.
func TestEncodeUnderSubscriptionThenConnectPurpose(t *testing.T) {
	f := newDeliveryFixture(t, nil)
	raw := policies.Policy{ID: "doctor-care", Priority: 10, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead}, Purposes: []string{"care"}}
	if err := f.engine.PutPolicy("an", raw); err != nil {
		t.Fatal(err)
	}
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	s := newSession(policies.UserPrincipal("doctor"), false, "marketing")
	f.sessions.put(doctor, s)
	care := "care"
	steps := []struct {
		name string
		subs map[string]*string
		want string
	}{
		{"CONNECT purpose", nil, `{"temperature":21.4}`},
		{"subscribed for care", map[string]*string{"things/sensor-1/#": &care}, `{"temperature":21.37}`},
		{"care unsubscribed", map[string]*string{"things/sensor-1/#": nil}, `{"temperature":21.4}`},
	}
	for _, st := range steps {
		if st.subs != nil {
			s.subscribed(st.subs)
		}
		for range 2 {
			if got, ok := encode(f.enforcer, doctor, `{"temperature":21.37}`); !ok || got != st.want {
				t.Fatalf("%s: encoded %q, %v; want %q", st.name, got, ok, st.want)
			}
		}
	}
}

// A publisher's session keeps its last publish decision; a change of the
// configuration or of the topic, and a decision that ends at a time, must
// still be decided anew for the very next publish, and every publish is
// audited under its own action.
func TestPublishDecisionFollowsChangesAndTime(t *testing.T) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 26, 17, 59, 0, 0, time.UTC))
	tally := auditTally{key: func(_ policies.Principal, act policies.Action, d *policies.Decision) string {
		if d.Allowed() {
			return string(act) + " allow"
		}
		return string(act) + " deny"
	}}
	f := newAuditedFixture(t, clock, tally.record)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	const reset, reading = "things/sensor-1/cmd/reset", "things/sensor-1/data/temperature"
	mayReset := policies.Policy{ID: "doctor-reset", Priority: 40, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/cmd/reset"}, Actions: []policies.Action{policies.ActCommand}}
	if err := f.engine.PutPolicy("an", mayReset); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		step  string
		topic string
		want  bool
		then  func()
	}{
		{"allowed", reset, true, nil},
		{"allowed again", reset, true, nil},
		{"another topic", reading, false, nil},
		{"back", reset, true, func() {
			deny := mayReset
			deny.Effect = "deny"
			if err := f.engine.PutPolicy("an", deny); err != nil {
				t.Fatal(err)
			}
		}},
		{"after the deny", reset, false, func() {
			// Until 18:00 only: the decision ends at a time, so it is never kept.
			until18 := mayReset
			until18.When = &policies.Condition{Attr: "env.hour", Op: policies.OpLt, Value: 18.0}
			if err := f.engine.PutPolicy("an", until18); err != nil {
				t.Fatal(err)
			}
		}},
		{"at 17:59", reset, true, func() { clock.Add(2 * time.Minute) }},
		{"at 18:01, nothing else changed", reset, false, nil},
	}
	for _, s := range steps {
		if got := h.OnACLCheck(doctor, s.topic, true); got != s.want {
			t.Fatalf("%s: publish to %s allowed = %v, want %v", s.step, s.topic, got, s.want)
		}
		if s.want {
			// As mochi goes on: OnPublish audits an allowed command, once
			// it has seen its retain flag.
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: s.topic, Payload: []byte(`{}`)}
			if _, err := h.OnPublish(doctor, pk); err != nil {
				t.Fatalf("%s: OnPublish refused the publish to %s: %v", s.step, s.topic, err)
			}
			h.OnPublished(doctor, pk)
		}
		if s.then != nil {
			s.then()
		}
	}
	want := map[string]int64{"command allow": 4, "command deny": 2, "publish deny": 1}
	if !maps.Equal(tally.n, want) {
		t.Errorf("audited %v, want %v", tally.n, want)
	}
}

// While a SUBSCRIBE is processed, a delivery on a topic equal to one of its
// filters is still a delivery: its rate limit holds. Only mochi's check of
// the filter itself (the very string of the packet) is a subscribe check.
func TestDeliveryDuringSubscribeOfEqualFilter(t *testing.T) {
	f := hourlyDoctor(t, nil)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	filter := string([]byte(memoTopic)) // as mochi decodes it from the SUBSCRIBE
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, Filters: packets.Subscriptions{{Filter: filter}}}
	h.OnSubscribe(doctor, sub)
	if !h.OnACLCheck(doctor, filter, false) {
		t.Fatal("the doctor may not subscribe to the temperature")
	}
	for i, want := range []bool{true, false, false} {
		topic := string([]byte(memoTopic)) // the publisher's packet's
		if got := h.OnACLCheck(doctor, topic, false); got != want {
			t.Fatalf("delivery %d during the SUBSCRIBE: allowed = %v, want %v (one an hour)", i, got, want)
		}
	}
	h.OnSubscribed(doctor, sub, []byte{0})
	if h.OnACLCheck(doctor, memoTopic, false) {
		t.Fatal("a delivery after the SUBSCRIBE passed the hourly rate")
	}
}

func TestSubscribingIsTheFilterItself(t *testing.T) {
	s := newSession(policies.UserPrincipal("doctor"), false, "")
	filter := string([]byte(memoTopic))
	s.beginSubscribe(map[string]pendingFilter{filter: {purpose: "care", at: []*byte{unsafe.StringData(filter)}}})
	if p, ok := s.subscribing(filter); !ok || p != "care" {
		t.Fatalf("the filter itself: %q, %v", p, ok)
	}
	if _, ok := s.subscribing(string([]byte(memoTopic))); ok {
		t.Fatal("an equal topic taken for the filter")
	}
	s.beginSubscribe(nil)
	if _, ok := s.subscribing(filter); ok {
		t.Fatal("the filter after the SUBSCRIBE ended")
	}
}

// A rewritten delivery carries the rewritten payload only: user properties,
// correlation data, content type and response topic, which no constraint
// rewrites, stay behind; a raw delivery keeps them.
func TestRewrittenDeliveryDropsPublisherProperties(t *testing.T) {
	f := newDeliveryFixture(t, nil)
	h := f.enforcer
	props := packets.Properties{User: []packets.UserProperty{{Key: "lat", Val: "48.7758"}}, CorrelationData: []byte("48.7758,9.1829"),
		ContentType: "lat=48.7758", ResponseTopic: "lat/48.7758"}
	for _, c := range []struct {
		who  *mqtt.Client
		want bool
	}{
		{f.client("an-0", policies.UserPrincipal("an")), true},
		{f.client("doctor-0", policies.UserPrincipal("doctor")), false},
	} {
		out := h.OnPacketEncode(c.who, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: memoTopic,
			Payload: []byte(`{"temperature":21.37}`), Properties: props})
		if out.FixedHeader.Type != packets.Publish {
			t.Fatalf("%s: delivery refused", c.who.ID)
		}
		p := out.Properties
		if kept := len(p.User) > 0 || len(p.CorrelationData) > 0 || p.ContentType != "" || p.ResponseTopic != ""; kept != c.want {
			t.Errorf("%s: properties kept = %v, want %v (%+v)", c.who.ID, kept, c.want, out.Properties)
		}
	}
}

// An admin demoted while connected gets no further $SYS message.
func TestDemotedAdminLosesSys(t *testing.T) {
	f := newDeliveryFixture(t, nil)
	if err := f.engine.PutUser(policies.User{Name: "root", Admin: true}); err != nil {
		t.Fatal(err)
	}
	root := f.client("root-0", policies.UserPrincipal("root"))
	f.sessions.put(root, newSession(policies.UserPrincipal("root"), true, ""))
	if !f.enforcer.OnACLCheck(root, "$SYS/broker/uptime", false) {
		t.Fatal("an admin does not get $SYS")
	}
	if err := f.engine.PutUser(policies.User{Name: "root"}); err != nil {
		t.Fatal(err)
	}
	if f.enforcer.OnACLCheck(root, "$SYS/broker/uptime", false) {
		t.Fatal("a demoted admin still gets $SYS")
	}
}

// A session restored after a restart (no Veil record, only mochi's client)
// is decided under the purpose its CONNECT declared, as before the restart.
func TestRestoredSessionKeepsConnectPurpose(t *testing.T) {
	f := newDeliveryFixture(t, nil)
	forDiagnosis := doctorTemperature
	forDiagnosis.Purposes = []string{"diagnosis"}
	if err := f.engine.PutPolicy("an", forDiagnosis); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		purpose string
		want    bool
	}{{"diagnosis", true}, {"", false}} {
		x, y := net.Pipe()
		t.Cleanup(func() { _ = x.Close(); _ = y.Close() })
		cl := f.server.NewClient(x, "bench", "doctor-restored-"+c.purpose, false)
		cl.Properties.Username = []byte("doctor")
		if c.purpose != "" {
			cl.Properties.Props.User = []packets.UserProperty{{Key: PurposeProperty, Val: c.purpose}}
		}
		if got := f.enforcer.OnACLCheck(cl, memoTopic, false); got != c.want {
			t.Errorf("restored session with CONNECT purpose %q: delivered = %v, want %v", c.purpose, got, c.want)
		}
	}
}

// A filter given twice in one SUBSCRIBE is checked as a filter both times:
// neither check is taken for a delivery (which would use up the rate).
func TestRepeatedFilterInOneSubscribe(t *testing.T) {
	f := hourlyDoctor(t, nil)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	first, second := string([]byte(memoTopic)), string([]byte(memoTopic))
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, Filters: packets.Subscriptions{{Filter: first}, {Filter: second}}}
	h.OnSubscribe(doctor, sub)
	for _, filter := range []string{first, second} {
		if !h.OnACLCheck(doctor, filter, false) {
			t.Fatal("the doctor may not subscribe to the temperature")
		}
	}
	h.OnSubscribed(doctor, sub, []byte{0, 0})
	if !h.OnACLCheck(doctor, string([]byte(memoTopic)), false) {
		t.Fatal("the first delivery after the SUBSCRIBE was held back: a filter check used up the rate")
	}
}

// hourlyDoctor is the delivery fixture where the doctor gets one reading
// an hour.
func hourlyDoctor(t *testing.T, clock policies.Clock) *deliveryFixture {
	t.Helper()
	f := newDeliveryFixture(t, clock)
	hourly := doctorTemperature
	hourly.Constraints = []policies.Constraint{{Kind: "rate", Seconds: 3600}}
	if err := f.engine.PutPolicy("an", hourly); err != nil {
		t.Fatal(err)
	}
	return f
}

// A connection that resumed the session cancels the old connection's will
// only if it has a delay: one without is due as that connection ends,
// taken over or not. (Whether mochi then sends it depends on which its
// read loop sees first, the close or the read error, so this is decided
// here, at the hook.)
func TestTakeoverCancelsOnlyADelayedWill(t *testing.T) {
	f := newDeliveryFixture(t, nil)
	reset := policies.Policy{ID: "doctor-reset", Priority: 40, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/+/cmd/reset"}, Actions: []policies.Action{policies.ActCommand}}
	if err := f.engine.PutPolicy("an", reset); err != nil {
		t.Fatal(err)
	}
	old := f.client("doctor-will", policies.UserPrincipal("doctor"))
	newer := f.client("doctor-will", policies.UserPrincipal("doctor"))
	f.enforcer.latest.Store("doctor-will", newer) // it resumed the session (no clean start)
	const topic = "things/sensor-1/cmd/reset"
	for _, c := range []struct {
		delay uint32
		want  string
	}{{0, topic}, {5, droppedWillTopic}} {
		old.Properties.Will.WillDelayInterval = c.delay
		old.Properties.Props.SessionExpiryInterval = 60
		w, err := f.enforcer.OnWill(old, mqtt.Will{TopicName: topic, Payload: []byte(`{}`)})
		if err != nil || w.TopicName != c.want {
			t.Errorf("will with a delay of %d s after a takeover: sent to %q (%v), want %q", c.delay, w.TopicName, err, c.want)
		}
	}
}
