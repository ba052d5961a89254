package broker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/policies"
)

// The security matrix: one test per row of docs/security.md.

func TestAnonymousRefused(t *testing.T) {
	if _, err := dial(t, "", "", connOpts{clientID: "anon"}); err == nil {
		t.Fatal("anonymous connection accepted")
	}
}

func TestWrongPasswordRefused(t *testing.T) {
	for _, c := range []struct{ user, pass string }{{"an", "wrong"}, {"an", ""}, {"nobody", "x"}, {"thermo-1", "wrong"}} {
		id := ""
		if c.user == "thermo-1" {
			id = "thermo-1"
		}
		if _, err := dial(t, c.user, c.pass, connOpts{clientID: id}); err == nil {
			t.Fatalf("%s with a wrong password accepted", c.user)
		}
	}
	connect(t, "an", "an-pass", connOpts{}) // and the right one works
}

func TestThingWithAnotherThingsIDRefused(t *testing.T) {
	if _, err := dial(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "watch-1"}); err == nil {
		t.Fatal("thermo-1 connected as client id watch-1")
	}
	if _, err := dial(t, "an", "an-pass", connOpts{clientID: "lock-1"}); err == nil {
		t.Fatal("a user took a thing's client id")
	}
	connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
}

// A client id is a topic level of the replies and of things' topics: one
// with a '/' would let client "app" read the replies of "app/alice".
func TestClientIDThatIsNotATopicLevelRefused(t *testing.T) {
	for _, id := range []string{"an-app/alice", "an+", "an#", "/"} {
		if _, err := dial(t, "an", "an-pass", connOpts{clientID: id}); err == nil {
			t.Fatalf("client id %q accepted", id)
		}
	}
	connect(t, "an", "an-pass", connOpts{clientID: "an-app.alice_1"})
}

func TestOwnerReceivesExactRawBytes(t *testing.T) {
	an := connect(t, "an", "an-pass", connOpts{})
	an.mustSubscribe("", "things/thermo-1/data/temperature")
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	raw := `{"temperature":21.37,"humidity":40.20, "note":"1e3 stays 1e3","n":1e3}`
	thermo.publish("things/thermo-1/data/temperature", raw, false)
	if m := an.next(); m.payload != raw {
		t.Fatalf("owner got %q, want the raw bytes %q", m.payload, raw)
	}
}

func TestStrangerSubscriptionRefused(t *testing.T) {
	s := connect(t, "stranger", "stranger-pass", connOpts{})
	codes := s.subscribe("", "things/thermo-1/data/temperature", "things/watch-1/#", "things/stranger-sensor/data/#")
	want := []byte{0x87, 0x87, 0x01}
	if string(codes) != string(want) {
		t.Fatalf("SUBACK codes % x, want % x", codes, want)
	}
	// MQTT 3.1.1 (mosquitto_sub): the refusal is 0x80.
	sub := needMosquitto(t, "mosquitto_sub")
	host, port, _ := net.SplitHostPort(veil.Addr("mqtt"))
	out, _ := exec.Command(sub, "-V", "mqttv311", "-h", host, "-p", port, "-u", "stranger", "-P", "stranger-pass",
		"-t", "things/thermo-1/data/temperature", "-d", "-W", "2").CombinedOutput()
	if !strings.Contains(string(out), "SUBACK") || !strings.Contains(string(out), "128") {
		t.Fatalf("mosquitto_sub did not see a 0x80 (128) SUBACK:\n%s", out)
	}
}

func TestStrangerWildcardsReceiveNothing(t *testing.T) {
	s := connect(t, "stranger", "stranger-pass", connOpts{})
	s.mustSubscribe("", "#", "+/+/data/#", "$share/g/things/#")
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	watch := connect(t, "watch-1", "watch-1-secret", connOpts{clientID: "watch-1"})
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":20.5}`, false)
	watch.publish("things/watch-1/data/location", `{"lat":48.7758,"lon":9.1829}`, false)
	// The stranger's own sensor is the marker: it must arrive (mochi merges
	// overlapping subscriptions of one client into one delivery, and the
	// shared subscription may add a second).
	own := connect(t, "stranger-sensor", "stranger-sensor-secret", connOpts{clientID: "stranger-sensor"})
	own.publish("things/stranger-sensor/data/temperature", `{"temperature":1}`, false)
	if m := s.next(); m.topic != "things/stranger-sensor/data/temperature" {
		t.Fatalf("stranger received %s: %s", m.topic, m.payload)
	}
	for {
		select {
		case m := <-s.msgs:
			if m.topic != "things/stranger-sensor/data/temperature" {
				t.Fatalf("stranger received %s: %s", m.topic, m.payload)
			}
			continue
		case <-time.After(quiet):
		}
		break
	}
}

func TestRetainedNotDeliveredToUnauthorised(t *testing.T) {
	lock := connect(t, "lock-1", "lock-1-secret", connOpts{clientID: "lock-1"})
	lock.publish("things/lock-1/state", `{"locked":true}`, true)
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	thermo.publish("things/thermo-1/data/humidity", `{"humidity":40}`, true)

	s := connect(t, "stranger", "stranger-pass", connOpts{})
	s.mustSubscribe("", "#")
	own := connect(t, "stranger-sensor", "stranger-sensor-secret", connOpts{clientID: "stranger-sensor"})
	own.publish("things/stranger-sensor/data/temperature", `{"temperature":2}`, false)
	if m := s.next(); m.topic != "things/stranger-sensor/data/temperature" {
		t.Fatalf("stranger received retained %s: %s", m.topic, m.payload)
	}
	s.nothing(quiet)

	// The owner does get the retained state.
	an := connect(t, "an", "an-pass", connOpts{})
	an.mustSubscribe("", "things/lock-1/state")
	if m := an.next(); m.payload != `{"locked":true}` || !m.retain {
		t.Fatalf("owner got %+v", m)
	}
}

func TestStrangerPublishRejected(t *testing.T) {
	an := connect(t, "an", "an-pass", connOpts{})
	an.mustSubscribeNew("things/thermo-1/#", "things/lock-1/cmd/#")
	s := connect(t, "stranger", "stranger-pass", connOpts{})
	for _, topic := range []string{"things/thermo-1/data/temperature", "things/lock-1/cmd/unlock", "things/thermo-1/state"} {
		if code := s.publish(topic, `{"temperature":99}`, true); code != 0x87 {
			t.Fatalf("publish to %s: reason 0x%02x, want 0x87", topic, code)
		}
	}
	an.nothing(quiet)
	if _, ok := veil.MQTT.Topics.Retained.Get("things/thermo-1/data/temperature"); ok {
		t.Fatal("a rejected publish was retained")
	}
}

// The will is decided only once the credentials are good: before them, a
// refusal told anyone whether a user may publish a topic.
func TestWillRefusalNeedsGoodCredentials(t *testing.T) {
	will := &paho.WillMessage{Topic: "things/lock-1/cmd/unlock", Payload: []byte(`{}`), QoS: 1}
	for _, c := range []struct {
		user, pass string
		want       byte
	}{
		{"stranger", "wrong", 0x86}, // may not publish there: says nothing about it
		{"an", "wrong", 0x86},       // may: the same answer
		{"nobody", "x", 0x86},
		{"stranger", "stranger-pass", 0x87}, // the right password: told why
	} {
		if got := connackCode(t, c.user, c.pass, will); got != c.want {
			t.Errorf("%s/%s with a will on things/lock-1/cmd/unlock: CONNACK 0x%02x, want 0x%02x", c.user, c.pass, got, c.want)
		}
	}
}

// connackCode sends one CONNECT with will and returns the CONNACK's reason
// code. From an address of its own: its wrong passwords must not bring the
// other tests' address to the login limiter.
func connackCode(t *testing.T, user, pass string, will *paho.WillMessage) byte {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
	conn, err := d.Dial("tcp", veil.Addr("mqtt"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := pc.Connect(ctx, &paho.Connect{ClientID: user + "-will-probe", Username: user, UsernameFlag: true,
		Password: []byte(pass), PasswordFlag: true, CleanStart: true, KeepAlive: 30, WillMessage: will})
	if ca == nil {
		t.Fatalf("%s: no CONNACK: %v", user, err)
	}
	if err == nil {
		_ = pc.Disconnect(&paho.Disconnect{})
	}
	return ca.ReasonCode
}

func TestWillOnAnotherTopicNeverPublished(t *testing.T) {
	an := connect(t, "an", "an-pass", connOpts{})
	an.mustSubscribeNew("things/lock-1/#")
	will := &paho.WillMessage{Topic: "things/lock-1/state", Payload: []byte(`{"locked":false}`), QoS: 1}
	if _, err := dial(t, "stranger", "stranger-pass", connOpts{will: will}); err == nil {
		t.Fatal("a will on another owner's topic was accepted at CONNECT")
	}
	// A thing's own will is accepted and delivered when it drops.
	conn, err := net.Dial("tcp", veil.Addr("mqtt"))
	if err != nil {
		t.Fatal(err)
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "lock-1", Username: "lock-1", UsernameFlag: true,
		Password: []byte("lock-1-secret"), PasswordFlag: true, CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "things/lock-1/state", Payload: []byte(`{"online":false}`), QoS: 1}}); err != nil {
		t.Fatal(err)
	}
	conn.Close() // no DISCONNECT: the will fires
	if m := an.next(); m.payload != `{"online":false}` {
		t.Fatalf("owner got %+v", m)
	}
}

// Commands are never retained: mochi would replay a retained command at
// every later subscription of its thing, on the thing's right to read its
// own commands alone — a visitor's unlock at every reconnect of the lock,
// long after her window closed. A retained command is refused whoever may
// send the command (the visitor inside her window, the owner): PUBACK 0x87
// at QoS 1, PUBREC 0x87 at QoS 2, dropped at QoS 0, over MQTT 3.1.1 the
// connection closed; the lock gets it neither live nor when it subscribes
// again. A will that would retain a command is refused at CONNECT (0x87).
// The visitor's unlock not retained reaches the lock.
func TestRetainedCommandNeverReplayed(t *testing.T) {
	const cmd = "things/lock-1/cmd/unlock"
	lock := connect(t, "lock-1", "lock-1-secret", connOpts{clientID: "lock-1"})
	lock.mustSubscribe("", "things/lock-1/cmd/#")
	for _, who := range []struct{ user, pass string }{{"ruth", "ruth-pass"}, {"an", "an-pass"}} {
		c := connect(t, who.user, who.pass, connOpts{})
		for qos, want := range []byte{0, 0x87, 0x87} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := c.Publish(ctx, &paho.Publish{Topic: cmd, QoS: byte(qos), Retain: true, Payload: []byte(`{"retained":true}`)})
			cancel()
			if r == nil {
				t.Fatalf("%s's retained unlock at QoS %d: %v", who.user, qos, err)
			}
			if r.ReasonCode != want { // QoS 0: paho's own success
				t.Fatalf("%s's retained unlock at QoS %d: reason 0x%02x, want 0x%02x", who.user, qos, r.ReasonCode, want)
			}
		}
		if code := c.publish(cmd, `{"by":"`+who.user+`"}`, false); code != 0 {
			t.Fatalf("%s's unlock: reason 0x%02x", who.user, code)
		}
		if m := lock.next(); m.payload != `{"by":"`+who.user+`"}` {
			t.Fatalf("lock got %s %s, want %s's unlock not retained", m.topic, m.payload, who.user)
		}
	}
	// MQTT 3.1.1 has no reason in a PUBACK: the connection is closed.
	pub := needMosquitto(t, "mosquitto_pub")
	host, port, _ := net.SplitHostPort(veil.Addr("mqtt"))
	if out, err := exec.Command(pub, "-V", "mqttv311", "-h", host, "-p", port, "-u", "an", "-P", "an-pass", "-q", "1", "-r",
		"-t", cmd, "-m", `{"retained":"3.1.1"}`).CombinedOutput(); err == nil {
		t.Errorf("mosquitto_pub of a retained unlock succeeded: %s", out)
	}
	lock.nothing(quiet)
	if pk, ok := veil.MQTT.Topics.Retained.Get(cmd); ok {
		t.Fatalf("retained on %s: %s", cmd, pk.Payload)
	}
	// The lock comes back and subscribes again: nothing is replayed.
	lock = connect(t, "lock-1", "lock-1-secret", connOpts{clientID: "lock-1"})
	lock.mustSubscribe("", "things/lock-1/cmd/#")
	lock.nothing(quiet)

	will := &paho.WillMessage{Topic: cmd, Payload: []byte(`{}`), QoS: 1, Retain: true}
	if got := connackCode(t, "an", "an-pass", will); got != 0x87 {
		t.Errorf("the owner with a retained will on %s: CONNACK 0x%02x, want 0x87", cmd, got)
	}
}

func TestFanoutViews(t *testing.T) {
	an := connect(t, "an", "an-pass", connOpts{})
	doc := connect(t, "doctor", "doctor-pass", connOpts{})
	s := connect(t, "stranger", "stranger-pass", connOpts{})
	an.mustSubscribe("", "things/thermo-1/data/temperature")
	doc.mustSubscribe("", "things/thermo-1/data/temperature")
	s.mustSubscribe("", "things/+/data/temperature")
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":21.37,"humidity":40.2}`, false)
	if m := an.next(); m.payload != `{"temperature":21.37,"humidity":40.2}` {
		t.Fatalf("owner got %s", m.payload)
	}
	if m := doc.next(); m.payload != `{"temperature":21.4,"humidity":40.2}` {
		t.Fatalf("doctor got %s", m.payload)
	}
	s.nothing(quiet)
}

func TestRevokePolicyStopsDeliveries(t *testing.T) {
	doc := connect(t, "doctor", "doctor-pass", connOpts{})
	doc.mustSubscribe("", "things/thermo-1/data/temperature")
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":19.04}`, false)
	if m := doc.next(); m.payload != `{"temperature":19.0}` {
		t.Fatalf("doctor got %s", m.payload)
	}
	pols := veil.Engine.Policies("an")
	var saved policies.Policy
	for _, p := range pols {
		if p.ID == "doctor-thermo" {
			saved = p
		}
	}
	if !veil.Engine.DeletePolicy("an", "doctor-thermo") {
		t.Fatal("policy not found")
	}
	t.Cleanup(func() { _ = veil.Engine.PutPolicy("an", saved) })
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":19.5}`, false)
	doc.nothing(quiet)
}

func TestVisitorCommandWindow(t *testing.T) {
	lock := connect(t, "lock-1", "lock-1-secret", connOpts{clientID: "lock-1"})
	lock.mustSubscribe("", "things/lock-1/cmd/#")
	ruth := connect(t, "ruth", "ruth-pass", connOpts{})
	t.Cleanup(func() { clock.Set(evening) })
	if code := ruth.publish("things/lock-1/cmd/unlock", `{"by":"ruth"}`, false); code != 0 {
		t.Fatalf("inside the window: reason 0x%02x", code)
	}
	if m := lock.next(); m.topic != "things/lock-1/cmd/unlock" {
		t.Fatalf("lock got %+v", m)
	}
	clock.Set(time.Date(2026, 11, 25, 23, 0, 0, 1, time.UTC))
	if code := ruth.publish("things/lock-1/cmd/unlock", `{"by":"ruth"}`, false); code != 0x87 {
		t.Fatalf("after the window: reason 0x%02x, want 0x87", code)
	}
	clock.Set(time.Date(2026, 11, 25, 17, 59, 59, 0, time.UTC))
	if code := ruth.publish("things/lock-1/cmd/unlock", `{"by":"ruth"}`, false); code != 0x87 {
		t.Fatalf("before the window: reason 0x%02x, want 0x87", code)
	}
	lock.nothing(quiet)
}

func TestInstallerRefusedAfterHandOver(t *testing.T) {
	patrick := connect(t, "patrick", "patrick-pass", connOpts{})
	if code := patrick.publish("things/lock-2/cmd/unlock", `{}`, false); code != 0 {
		t.Fatalf("before hand-over: reason 0x%02x", code)
	}
	accepted := policies.Relationship{Thing: "lock-2", User: "an", Relation: policies.RelOwner, Status: policies.StatusActive}
	if err := veil.Engine.PutRelationship(accepted); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		accepted.Status = policies.StatusPending
		_ = veil.Engine.PutRelationship(accepted)
	})
	if code := patrick.publish("things/lock-2/cmd/unlock", `{}`, false); code != 0x87 {
		t.Fatalf("after hand-over: reason 0x%02x, want 0x87", code)
	}
}

func TestRevokedQoS1NotResent(t *testing.T) {
	for _, takeover := range []bool{false, true} {
		t.Run(fmt.Sprintf("takeover=%v", takeover), func(t *testing.T) {
			id := fmt.Sprintf("doctor-resend-%v", takeover)
			// Manual acks: the doctor never acknowledges, so the message stays inflight.
			doc := connect(t, "doctor", "doctor-pass", connOpts{clientID: id, expiry: 300, manualAcks: true})
			doc.mustSubscribe("", "things/thermo-1/data/temperature")
			thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
			thermo.publish("things/thermo-1/data/temperature", `{"temperature":18.01}`, false)
			doc.next()
			saved := policyByID(t, "an", "doctor-thermo")
			veil.Engine.DeletePolicy("an", "doctor-thermo")
			t.Cleanup(func() { _ = veil.Engine.PutPolicy("an", saved) })
			if !takeover {
				_ = doc.Disconnect(&paho.Disconnect{})
				time.Sleep(100 * time.Millisecond)
			}
			again := connect(t, "doctor", "doctor-pass", connOpts{clientID: id, expiry: 300})
			again.nothing(quiet)
		})
	}
}

// A QoS 1 message queued for an offline doctor in the evening, under the
// evening's view (a tenth of a degree), is resent next morning under that
// view too, though in the morning the doctor may read it exactly.
func TestQueuedQoS1KeepsItsView(t *testing.T) {
	daytime := policies.Policy{ID: "doctor-thermo-daytime", Priority: 5, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/thermo-1/data/temperature"}, Actions: []policies.Action{policies.ActRead},
		When: &policies.Condition{Attr: "env.hour", Op: policies.OpLt, Value: 18.0}}
	if err := veil.Engine.PutPolicy("an", daytime); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { veil.Engine.DeletePolicy("an", daytime.ID); clock.Set(evening) })
	clock.Set(evening)
	doc := connect(t, "doctor", "doctor-pass", connOpts{clientID: "doctor-queued", expiry: 300})
	doc.mustSubscribe("", "things/thermo-1/data/temperature")
	_ = doc.Disconnect(&paho.Disconnect{})
	time.Sleep(100 * time.Millisecond)
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":21.37}`, false)

	clock.Set(evening.Add(13 * time.Hour)) // 09:00 next day
	again := connect(t, "doctor", "doctor-pass", connOpts{clientID: "doctor-queued", expiry: 300})
	if m := again.next(); m.payload != `{"temperature":21.4}` {
		t.Fatalf("the evening's reading resent in the morning as %s, want the evening's view {\"temperature\":21.4}", m.payload)
	}
	// A reading of the morning is exact.
	again.mustSubscribe("", "things/thermo-1/data/temperature")
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":21.37}`, false)
	if m := again.next(); m.payload != `{"temperature":21.37}` {
		t.Fatalf("the morning's reading: %s", m.payload)
	}
}

func policyByID(t *testing.T, owner, id string) policies.Policy {
	t.Helper()
	for _, p := range veil.Engine.Policies(owner) {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("no policy %s/%s", owner, id)
	return policies.Policy{}
}

func TestTopicAliasSubscriberGetsRewrittenPayloads(t *testing.T) {
	doc := connect(t, "doctor", "doctor-pass", connOpts{aliasMax: 10})
	doc.mustSubscribe("", "things/thermo-1/data/temperature")
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	for i, want := range []string{`{"temperature":20.1}`, `{"temperature":20.2}`, `{"temperature":20.3}`} {
		thermo.publish("things/thermo-1/data/temperature", fmt.Sprintf(`{"temperature":20.%d4}`, i+1), false)
		m := doc.next()
		if m.payload != want || m.topic != "things/thermo-1/data/temperature" {
			t.Fatalf("message %d: %s %s, want %s", i, m.topic, m.payload, want)
		}
	}
}

// A PUBLISH by topic alias only is decided on the topic the alias stands
// for: allowed where its publisher may publish, refused where not (mochi
// checks the empty topic before it resolves the alias).
func TestTopicAliasPublishIsDecided(t *testing.T) {
	doc := connect(t, "doctor", "doctor-pass", connOpts{})
	doc.mustSubscribe("", "things/thermo-1/data/temperature")
	an := connect(t, "an", "an-pass", connOpts{})
	an.mustSubscribeNew("things/lock-1/#")
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	byAlias := func(c *client, topic string, alias uint16, payload string, qos ...byte) byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: append(qos, 1)[0], Payload: []byte(payload),
			Properties: &paho.PublishProperties{TopicAlias: &alias}})
		if r != nil {
			return r.ReasonCode
		}
		if err != nil {
			t.Fatalf("publish by alias %d: %v", alias, err)
		}
		return 0
	}
	byAlias(thermo, "things/thermo-1/data/temperature", 1, `{"temperature":20.14}`)
	byAlias(thermo, "", 1, `{"temperature":20.26}`)
	for _, want := range []string{`{"temperature":20.1}`, `{"temperature":20.3}`} {
		if m := doc.next(); m.payload != want || m.topic != "things/thermo-1/data/temperature" {
			t.Fatalf("doctor got %s %s, want %s", m.topic, m.payload, want)
		}
	}
	// The stranger's alias for another owner's lock is never registered.
	s := connect(t, "stranger", "stranger-pass", connOpts{})
	if code := byAlias(s, "things/lock-1/cmd/unlock", 1, `{}`); code != 0x87 {
		t.Fatalf("alias registration on the lock: reason 0x%02x, want 0x87", code)
	}
	if code := byAlias(s, "", 1, `{}`); code != 0x87 {
		t.Fatalf("publish by the unregistered alias: reason 0x%02x, want 0x87", code)
	}
	an.nothing(quiet)

	// An alias registered while allowed is decided again on every use: after
	// the right is revoked, a publish by it is refused (PUBREC 0x87 at QoS 2).
	reset := policies.Policy{ID: "doctor-reset-alias", Priority: 40, Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/lock-1/cmd/reset"}, Actions: []policies.Action{policies.ActCommand}}
	if err := veil.Engine.PutPolicy("an", reset); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { veil.Engine.DeletePolicy("an", reset.ID) })
	doctor := connect(t, "doctor", "doctor-pass", connOpts{clientID: "doctor-alias"})
	if code := byAlias(doctor, "things/lock-1/cmd/reset", 3, `{"n":1}`, 2); code >= 0x80 {
		t.Fatalf("the doctor's allowed reset: reason 0x%02x", code)
	}
	if m := an.next(); m.payload != `{"n":1}` {
		t.Fatalf("owner got %+v", m)
	}
	veil.Engine.DeletePolicy("an", reset.ID)
	if code := byAlias(doctor, "", 3, `{"n":2}`, 2); code != 0x87 {
		t.Fatalf("a reset by alias after the revocation: reason 0x%02x, want 0x87", code)
	}
	an.nothing(quiet)
}

func TestRangeFilteredSubscriber(t *testing.T) {
	an := connect(t, "an", "an-pass", connOpts{})
	ruth := connect(t, "ruth", "ruth-pass", connOpts{})
	an.mustSubscribe("", "things/watch-1/data/heart_rate")
	ruth.mustSubscribe("", "things/watch-1/data/heart_rate")
	watch := connect(t, "watch-1", "watch-1-secret", connOpts{clientID: "watch-1"})
	watch.publish("things/watch-1/data/heart_rate", `{"bpm":150}`, false)
	watch.publish("things/watch-1/data/heart_rate", `{"bpm":72}`, false)
	if m := an.next(); m.payload != `{"bpm":150}` {
		t.Fatalf("owner got %s", m.payload)
	}
	if m := an.next(); m.payload != `{"bpm":72}` {
		t.Fatalf("owner got %s", m.payload)
	}
	if m := ruth.next(); m.payload != `{"bpm":72}` {
		t.Fatalf("ruth got %s, want only the in-range reading", m.payload)
	}
	ruth.nothing(quiet)
	// A payload that is not JSON reaches a constrained subscriber not at all.
	watch.publish("things/watch-1/data/heart_rate", `bpm=80`, false)
	if m := an.next(); m.payload != `bpm=80` {
		t.Fatalf("owner got %s", m.payload)
	}
	ruth.nothing(quiet)
}

func TestSysRefusedToNonAdmins(t *testing.T) {
	an := connect(t, "an", "an-pass", connOpts{})
	if codes := an.subscribe("", "$SYS/#"); codes[0] != 0x87 {
		t.Fatalf("non-admin $SYS subscribe: 0x%02x", codes[0])
	}
	admin := connect(t, "admin", "admin-pass", connOpts{})
	admin.mustSubscribe("", "$SYS/broker/version")
	if m := admin.next(); !strings.HasPrefix(m.topic, "$SYS/") {
		t.Fatalf("admin got %+v", m)
	}
}

func TestMalformedAndOversizedPacketsDropOnlyTheirConnection(t *testing.T) {
	an := connect(t, "an", "an-pass", connOpts{})
	an.mustSubscribe("", "things/thermo-1/data/temperature")
	for name, send := range map[string][]byte{
		"garbage":            []byte("GET / HTTP/1.1\r\n\r\n"),
		"bad remaining size": {0x10, 0xff, 0xff, 0xff, 0xff, 0x7f},
		"oversized publish":  oversizedPublish(),
	} {
		conn, err := net.Dial("tcp", veil.Addr("mqtt"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(send)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := bufio.NewReader(conn).ReadByte(); err == nil {
			// a CONNACK refusal is fine; the connection must then close
			_, err = conn.Read(make([]byte, 64))
			if err == nil {
				t.Fatalf("%s: connection still open", name)
			}
		}
		conn.Close()
	}
	// A connected thing sending an oversized PUBLISH is dropped; others carry on.
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	big, _ := json.Marshal(map[string]string{"temperature": strings.Repeat("x", 70<<10)})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, _ = thermo.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", QoS: 1, Payload: big})
	select {
	case <-thermo.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("oversized publisher still connected")
	}
	fresh := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	fresh.publish("things/thermo-1/data/temperature", `{"temperature":5}`, false)
	if m := an.next(); m.payload != `{"temperature":5}` {
		t.Fatalf("owner got %s", m.payload)
	}
}

// oversizedPublish is a CONNECT-less PUBLISH claiming 1 MiB.
func oversizedPublish() []byte {
	return []byte{0x30, 0x80, 0x80, 0x40, 0, 1, 'a'}
}

func TestFanoutViewsMQTT311(t *testing.T) {
	sub := needMosquitto(t, "mosquitto_sub")
	pub := needMosquitto(t, "mosquitto_pub")
	host, port, _ := net.SplitHostPort(veil.Addr("mqtt"))
	listen := func(user, pass, filter string) *exec.Cmd {
		cmd := exec.Command(sub, "-V", "mqttv311", "-h", host, "-p", port, "-u", user, "-P", pass, "-t", filter, "-v", "-W", "4")
		return cmd
	}
	an, doc, s := listen("an", "an-pass", "things/thermo-1/data/temperature"), listen("doctor", "doctor-pass", "things/thermo-1/data/temperature"),
		listen("stranger", "stranger-pass", "#")
	var outs [3]strings.Builder
	for i, c := range []*exec.Cmd{an, doc, s} {
		c.Stdout = &outs[i]
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // let the three subscriptions settle
	if out, err := exec.Command(pub, "-V", "mqttv311", "-h", host, "-p", port, "-i", "thermo-1", "-u", "thermo-1", "-P", "thermo-1-secret",
		"-t", "things/thermo-1/data/temperature", "-m", `{"temperature":22.26}`).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	for _, c := range []*exec.Cmd{an, doc, s} {
		_ = c.Wait() // -W 4: each exits after its timeout
	}
	if got := outs[0].String(); got != "things/thermo-1/data/temperature {\"temperature\":22.26}\n" {
		t.Fatalf("owner (3.1.1) got %q", got)
	}
	if got := outs[1].String(); got != "things/thermo-1/data/temperature {\"temperature\":22.3}\n" {
		t.Fatalf("doctor (3.1.1) got %q", got)
	}
	if got := outs[2].String(); got != "" {
		t.Fatalf("stranger (3.1.1) got %q", got)
	}
}
