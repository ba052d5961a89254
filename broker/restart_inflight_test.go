package broker_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/broker"
)

// Messages queued for the doctor's offline session are resent after the
// broker restarts as they were decided when they were published (rounded),
// in order, though the doctor may read them exactly by the time the
// session is resumed; and again so after a second restart, their first
// resend not acknowledged. mochi restores the session and its in-flight
// messages from Veil's state store without calling a hook: the views they
// were decided under are gone with the first broker.
func TestQueuedMessagesSurviveRestartsAsDecided(t *testing.T) {
	dir := t.TempDir()
	// mochi stamps a message with the wall clock: the doctor reads exactly
	// except in the hour the test publishes in (and the next, should it
	// end meanwhile), when the household's doctor-thermo policy rounds.
	published := time.Now().UTC()
	clk := &testClock{}
	clk.Set(published)
	b := startWithClock(t, dir, clk)
	an := mustCfg(t, b.Addr("mqtt"), "an", "an-pass")
	h := published.Hour()
	an.mustOK("$config/users/an/policies/doctor-exact", exactExceptHour(h))
	const topic = "things/thermo-1/data/temperature"
	subscribeDoctor(t, b.Addr("mqtt"), topic)
	publishAs(t, b.Addr("mqtt"), "thermo-1", [2]string{topic, `{"temperature":21.37}`}, [2]string{topic, `{"temperature":22.44}`},
		[2]string{topic, `{"temperature":23.51}`})
	b.Close()

	rounded := []string{`{"temperature":21.4}`, `{"temperature":22.4}`, `{"temperature":23.5}`}
	clk.Set(published.Add(3 * time.Hour)) // exact by now
	b = startWithClock(t, dir, clk)
	doc, got := doctorSession(t, b.Addr("mqtt"), true) // not acknowledged
	expect(t, "after the first restart", got, rounded)
	_ = doc.Disconnect(&paho.Disconnect{})
	b.Close()

	b = startWithClock(t, dir, clk)
	defer b.Close()
	_, got = doctorSession(t, b.Addr("mqtt"), false)
	expect(t, "after the second restart", got, rounded)
	publishAs(t, b.Addr("mqtt"), "thermo-1", [2]string{topic, `{"temperature":24.62}`})
	expect(t, "published now", got, []string{`{"temperature":24.62}`})
}

// A retained message delivered on a subscription and not acknowledged
// before a restart, nor when resent to a resumed session, is resent after
// the restart as it was decided when it was delivered, not when it was
// published: the state store keeps the time of the delivery, also through
// the takeover (a review found mochi's drop from the old connection
// deleted it).
func TestRetainedDeliveryAcrossRestartDecidedAsDelivered(t *testing.T) {
	dir := t.TempDir()
	published := time.Now().UTC() // mochi stamps the message with the wall clock
	subscribed := published.Add(6 * time.Hour)
	clk := &testClock{}
	clk.Set(published)
	b := startWithClock(t, dir, clk)
	an := mustCfg(t, b.Addr("mqtt"), "an", "an-pass")
	// Exact except in the hour of the subscription (and the next), when the
	// household's doctor-thermo policy rounds.
	h := subscribed.Hour()
	an.mustOK("$config/users/an/policies/doctor-exact", exactExceptHour(h))
	const topic = "things/thermo-1/data/temperature"
	thermo, err := dialCfg(t, b.Addr("mqtt"), "", "thermo-1", "thermo-1-secret", "thermo-1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := thermo.pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(`{"temperature":20.47}`)}); err != nil {
		t.Fatal(err)
	}

	clk.Set(subscribed)
	doc, got := doctorSession(t, b.Addr("mqtt"), true) // not acknowledged
	if sa, err := doc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("doctor's subscription: %v %v", sa, err)
	}
	expect(t, "on the subscription", got, []string{`{"temperature":20.5}`})
	_ = doc.Disconnect(&paho.Disconnect{})
	// Resumed within the hour, and again not acknowledged: mochi moves the
	// message to the new connection and drops it from the old one.
	doc, got = doctorSession(t, b.Addr("mqtt"), true)
	expect(t, "resumed", got, []string{`{"temperature":20.5}`})
	_ = doc.Disconnect(&paho.Disconnect{})
	b.Close()

	clk.Set(subscribed.Add(3 * time.Hour)) // exact by now
	b = startWithClock(t, dir, clk)
	defer b.Close()
	_, got = doctorSession(t, b.Addr("mqtt"), false)
	expect(t, "after the restart", got, []string{`{"temperature":20.5}`})
}

// A message queued under a view that depends on live data is resent after a
// restart under that view, though the live data allow more by then: their
// past is not kept, so the state store keeps the view itself.
func TestLiveDataViewSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clk := &testClock{}
	clk.Set(time.Now().UTC())
	b := startWithClock(t, dir, clk)
	an := mustCfg(t, b.Addr("mqtt"), "an", "an-pass")
	// Exact while the room is humid; else the household's doctor-thermo
	// policy rounds.
	an.mustOK("$config/users/an/policies/doctor-humid", doctorHumid)
	const topic = "things/thermo-1/data/temperature"
	subscribeDoctor(t, b.Addr("mqtt"), topic)
	publishAs(t, b.Addr("mqtt"), "thermo-1", [2]string{"things/thermo-1/data/humidity", `{"h":40}`}, [2]string{topic, `{"temperature":21.37}`})
	b.Close()

	b = startWithClock(t, dir, clk)
	defer b.Close()
	publishAs(t, b.Addr("mqtt"), "thermo-1", [2]string{"things/thermo-1/data/humidity", `{"h":60}`})
	_, got := doctorSession(t, b.Addr("mqtt"), false)
	expect(t, "after the restart, the room humid now", got, []string{`{"temperature":21.4}`})
	publishAs(t, b.Addr("mqtt"), "thermo-1", [2]string{topic, `{"temperature":22.51}`})
	expect(t, "published now", got, []string{`{"temperature":22.51}`})
}

// A subscription keeps the purpose it declared across a restart: the doctor
// reads the watch's location for diagnosis only, declared on SUBSCRIBE, and a
// position published while the doctor is away after the restart is queued
// for them under that purpose, rounded. A subscription refused before the
// restart is not restored by it.
func TestSubscriptionPurposeSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clk := &testClock{}
	clk.Set(time.Now().UTC())
	b := startWithClock(t, dir, clk)
	const topic = "things/watch-1/data/location"
	doc, _ := doctorSession(t, b.Addr("mqtt"), false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := doc.Subscribe(ctx, &paho.Subscribe{
		Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}, {Topic: "things/lock-1/#", QoS: 1}},
		Properties:    &paho.SubscribeProperties{User: paho.UserProperties{{Key: "purpose", Value: "diagnosis"}}}})
	if sa == nil || sa.Reasons[0] != 1 || sa.Reasons[1] < 0x80 { // (paho errs when one is refused)
		t.Fatalf("doctor's subscriptions: %v %v; want the location granted, lock-1 refused", sa, err)
	}
	_ = doc.Disconnect(&paho.Disconnect{})
	b.Close()

	b = startWithClock(t, dir, clk)
	defer b.Close()
	watch, err := dialCfg(t, b.Addr("mqtt"), "", "watch-1", "watch-1-secret", "watch-1")
	if err != nil {
		t.Fatal(err)
	}
	if code := watch.publish(topic, `{"lat":48.77583,"lon":9.18294}`); code != 0 {
		t.Fatalf("watch-1 publish: 0x%02x", code)
	}
	lock, err := dialCfg(t, b.Addr("mqtt"), "", "lock-1", "lock-1-secret", "lock-1")
	if err != nil {
		t.Fatal(err)
	}
	if code := lock.publish("things/lock-1/state", `{"locked":true}`); code != 0 {
		t.Fatalf("lock-1 publish: 0x%02x", code)
	}
	_, got := doctorSession(t, b.Addr("mqtt"), false)
	expect(t, "queued after the restart", got, []string{`{"lat":48.78,"lon":9.18}`})
}

// A message delivered raw by live data to a session restored at start and
// still offline is resent raw when the client comes back: it was decided in
// this process (a review found it pruned, as if its record were of an older
// version).
func TestRawLiveDataDeliveryToARestoredSessionKept(t *testing.T) {
	dir := t.TempDir()
	clk := &testClock{}
	clk.Set(time.Now().UTC())
	b := startWithClock(t, dir, clk)
	an := mustCfg(t, b.Addr("mqtt"), "an", "an-pass")
	an.mustOK("$config/users/an/policies/doctor-humid", doctorHumid)
	const topic = "things/thermo-1/data/temperature"
	subscribeDoctor(t, b.Addr("mqtt"), topic)
	b.Close()

	// The doctor's session is restored, offline; the room is humid.
	b = startWithClock(t, dir, clk)
	defer b.Close()
	publishAs(t, b.Addr("mqtt"), "thermo-1", [2]string{"things/thermo-1/data/humidity", `{"h":60}`}, [2]string{topic, `{"temperature":21.37}`})
	_, got := doctorSession(t, b.Addr("mqtt"), false)
	expect(t, "queued for the restored session, raw by live data, humid still", got, []string{`{"temperature":21.37}`})
}

// exactExceptHour lets the doctor read thermo-1's temperature exactly
// except in hour h and the next (should h end during the test), when the
// household's doctor-thermo policy rounds it.
func exactExceptHour(h int) string {
	return fmt.Sprintf(`{"id":"doctor-exact","priority":5,"effect":"allow",`+
		`"subjects":["role:doctor"],"resources":["things/thermo-1/data/temperature"],"actions":["read"],`+
		`"when":{"not":{"attr":"env.hour","op":"in","value":[%d,%d]}}}`, h, (h+1)%24)
}

// doctorHumid lets the doctor read thermo-1's temperature exactly while the
// room is humid (live data); else the household's doctor-thermo policy
// rounds it.
const doctorHumid = `{"id":"doctor-humid","priority":5,"effect":"allow",` +
	`"subjects":["role:doctor"],"resources":["things/thermo-1/data/temperature"],"actions":["read"],` +
	`"when":{"attr":"data.thermo-1.humidity.h","op":"gt","value":50}}`

// subscribeDoctor subscribes the doctor's persistent session to topic at
// QoS 1 and leaves it offline.
func subscribeDoctor(t *testing.T, addr, topic string) {
	t.Helper()
	doc, _ := doctorSession(t, addr, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if sa, err := doc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("doctor's subscription: %v %v", sa, err)
	}
	_ = doc.Disconnect(&paho.Disconnect{})
}

// publishAs connects thing (its secret is "{thing}-secret") and publishes
// each topic and payload at QoS 1.
func publishAs(t *testing.T, addr, thing string, msgs ...[2]string) {
	t.Helper()
	c, err := dialCfg(t, addr, "", thing, thing+"-secret", thing)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if code := c.publish(m[0], m[1]); code != 0 {
			t.Fatalf("%s publish %s: 0x%02x", thing, m[0], code)
		}
	}
}

// startWithClock starts a broker of the test's own on dataDir with the
// household bootstrap and clock.
func startWithClock(t *testing.T, dataDir string, clock *testClock) *broker.Broker {
	t.Helper()
	cfg := broker.Defaults()
	cfg.Clock = clock
	return startConfigured(t, dataDir, cfg)
}

// startConfigured starts cfg on dataDir (embedded FerretDB unless
// cfg.MongoURI is set) with the household bootstrap, on ports of its own.
func startConfigured(t *testing.T, dataDir string, cfg broker.Config) *broker.Broker {
	t.Helper()
	cfg.MQTT, cfg.HTTP, cfg.DataDir = "127.0.0.1:0", "", dataDir
	cfg.Bootstrap, cfg.LogLevel = "testdata/e2e/household.yaml", "warn"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := broker.Start(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// doctorSession connects the doctor to the persistent session
// "doctor-restart" at addr, acknowledging what it receives unless
// manualAcks, and returns the client and the payloads it receives.
func doctorSession(t *testing.T, addr string, manualAcks bool) (*paho.Client, chan string) {
	t.Helper()
	return persistentSession(t, addr, "doctor-restart", "doctor", "doctor-pass", manualAcks)
}

// persistentSession connects user to the session clientID at addr (expiry
// an hour), acknowledging what it receives unless manualAcks, and returns
// the client and the payloads it receives.
func persistentSession(t *testing.T, addr, clientID, user, password string, manualAcks bool) (*paho.Client, chan string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 100)
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, EnableManualAcknowledgment: manualAcks,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- string(pr.Packet.Payload)
			return true, nil
		}}})
	expiry := uint32(3600)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, Username: user, UsernameFlag: true,
		Password: []byte(password), PasswordFlag: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
	return pc, got
}

// expect fails unless got delivers want, in order, and nothing more.
func expect(t *testing.T, when string, got chan string, want []string) {
	t.Helper()
	for i, w := range want {
		select {
		case p := <-got:
			if p != w {
				t.Fatalf("%s: message %d is %s, want %s", when, i+1, p, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: message %d (%s) never came", when, i+1, w)
		}
	}
	select {
	case p := <-got:
		t.Fatalf("%s: unexpected %s", when, p)
	case <-time.After(300 * time.Millisecond):
	}
}
