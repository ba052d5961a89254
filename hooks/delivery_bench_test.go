package hooks

import (
	"fmt"
	"net"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/policies"
)

// BenchmarkDeliveryHooks runs the enforcer's hooks for one message the way
// mochi calls them, without the network: the publish decision, OnPublish,
// every subscriber's delivery decision, OnPublished, then each delivered
// copy's OnPacketEncode. It reports what Veil adds per delivery, with the
// example household's views: in a fan-out 30 subscribers (10 owners raw, 10
// doctors rounded, 10 strangers denied), in a fan-in 30 things to one
// doctor. Instructions per delivery: perf stat the test binary at two
// -benchtime counts and divide the difference.
func BenchmarkDeliveryHooks(b *testing.B) {
	for _, sc := range []string{"fanout", "fanin"} {
		b.Run(sc, func(b *testing.B) { benchDeliveryHooks(b, sc == "fanin") })
	}
}

// deliveryFixture is an enforcer over the household of
// BenchmarkDeliveryHooks, with clients made without a network.
type deliveryFixture struct {
	tb       testing.TB
	engine   *policies.Engine
	enforcer *Enforcer
	server   *mqtt.Server
	sessions *Sessions
}

func newDeliveryFixture(tb testing.TB, clock policies.Clock) *deliveryFixture {
	return newAuditedFixture(tb, clock, nil)
}

// newAuditedFixture is newDeliveryFixture telling audit (nil: an Audit)
// every decision.
func newAuditedFixture(tb testing.TB, clock policies.Clock, auditFn AuditFunc) *deliveryFixture {
	e := policies.NewEngine(policies.Options{Secret: []byte("bench"), Clock: clock})
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(e.PutUser(policies.User{Name: "an"}))
	must(e.PutUser(policies.User{Name: "doctor", Attributes: policies.Attributes{"role": "doctor"}}))
	must(e.PutUser(policies.User{Name: "stranger"}))
	for i := range 30 {
		must(e.PutThing(policies.Thing{ID: fmt.Sprintf("sensor-%d", i), Owner: "an", Kind: "sensor", Streams: []string{"temperature"}}))
	}
	must(e.PutPolicy("an", doctorTemperature))

	srv := mqtt.New(&mqtt.Options{InlineClient: false})
	audit := NewAudit(AuditConfig{Clock: clock})
	if clock == nil {
		stop := make(chan struct{})
		go audit.keepMinute(stop) // as Start does
		tb.Cleanup(func() { close(stop) })
	}
	f := &deliveryFixture{tb: tb, engine: e, server: srv, sessions: &Sessions{}}
	if auditFn == nil {
		auditFn = audit.Record
	}
	f.enforcer = NewEnforcer(EnforcerConfig{Engine: e, Sessions: f.sessions, Server: srv, Clock: clock, Live: NewLiveValues(), Audit: auditFn})
	return f
}

// doctorTemperature is the example household's doctor policy.
var doctorTemperature = policies.Policy{ID: "doctor-temperature", Priority: 40, Effect: "allow", Subjects: []string{"role:doctor"},
	Resources: []string{"things/+/data/temperature"}, Actions: []policies.Action{policies.ActRead},
	Constraints: []policies.Constraint{{Kind: "accuracy", Field: "temperature", Step: 0.1}}}

// client returns a connected client of p with a session.
func (f *deliveryFixture) client(id string, p policies.Principal) *mqtt.Client {
	x, y := net.Pipe()
	f.tb.Cleanup(func() { _ = x.Close(); _ = y.Close() })
	cl := f.server.NewClient(x, "bench", id, false)
	f.sessions.put(cl, newSession(p, false, ""))
	return cl
}

func benchDeliveryHooks(b *testing.B, fanin bool) {
	f := newDeliveryFixture(b, nil)
	h, client := f.enforcer, f.client
	var pubs, subs []*mqtt.Client
	if fanin {
		for i := range 30 {
			id := fmt.Sprintf("sensor-%d", i)
			pubs = append(pubs, client(id, policies.ThingPrincipal(id)))
		}
		subs = append(subs, client("doctor-0", policies.UserPrincipal("doctor")))
	} else {
		pubs = append(pubs, client("sensor-0", policies.ThingPrincipal("sensor-0")))
		for i := range 10 {
			subs = append(subs, client(fmt.Sprintf("an-%d", i), policies.UserPrincipal("an")),
				client(fmt.Sprintf("doctor-%d", i), policies.UserPrincipal("doctor")),
				client(fmt.Sprintf("stranger-%d", i), policies.UserPrincipal("stranger")))
		}
	}
	topics := make([]string, len(pubs))
	for i, cl := range pubs {
		topics[i] = "things/" + cl.ID + "/data/temperature"
	}
	// Payloads as veil bench sends them, a new buffer for each message (mochi
	// reads every packet into a fresh one), cycled so a rendering is found
	// by content, not by the buffer's address.
	payloads := make([][]byte, 4096)
	for i := range payloads {
		payloads[i] = fmt.Appendf(nil, `{"f":"%d","s":"%d","t":"1764100000000000000","temperature":%.3f,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`,
			i%30, i, 20+float64(i%500)/100+0.003)
	}
	copies := make([][]byte, len(subs)) // a delivered copy's buffer, as mochi's Copy makes it
	for i := range copies {
		copies[i] = make([]byte, 0, 256)
	}
	delivered := 0
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := i % len(pubs)
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topics[p], Payload: payloads[i%len(payloads)]}
		if !h.OnACLCheck(pubs[p], pk.TopicName, true) {
			b.Fatal("publish refused")
		}
		if _, err := h.OnPublish(pubs[p], pk); err != nil {
			b.Fatal(err)
		}
		var to [30]*mqtt.Client
		n := 0
		for _, sub := range subs {
			if h.OnACLCheck(sub, pk.TopicName, false) {
				to[n] = sub
				n++
			}
		}
		h.OnPublished(pubs[p], pk)
		for k, sub := range to[:n] {
			out := pk
			out.Payload = append(copies[k][:0], pk.Payload...)
			if enc := h.OnPacketEncode(sub, out); enc.FixedHeader.Type != packets.Publish {
				b.Fatal("delivery refused at encode")
			}
		}
		delivered += n
	}
	b.ReportMetric(float64(delivered)/float64(b.N), "deliveries/op")
}
