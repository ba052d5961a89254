package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/policies"
)

// addFactory registers a device's factory credential with the shared broker.
func addFactory(t *testing.T, serial, secret string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := veil.AddFactoryDevice(ctx, serial, secret, "JL-200", "jLock"); err != nil {
		t.Fatal(err)
	}
}

// TestSmartlockCaseStudy is the case study of ../shared/seeds/000_…: the
// lock enrols itself, Patrick claims and installs it, hands it over to An,
// An shares it with Peter, Peter lets Ruth in for tonight, An revokes Peter.
func TestSmartlockCaseStudy(t *testing.T) {
	addr := veil.Addr("mqtt")
	addFactory(t, "JL-200-0100", "factory-0100")

	// The lock enrols itself.
	enr, err := enrollDevice(t, addr, "", "JL-200-0100", "factory-0100", `{"kind":"actuator"}`)
	if err != nil || !enr.OK {
		t.Fatalf("enrolment: %v %+v", err, enr)
	}
	lockID := enr.Thing
	if lockID != "jl-200-0100" || enr.Secret == "" || enr.ClaimCode == "" {
		t.Fatalf("enrolment reply %+v", enr)
	}
	lock := connect(t, lockID, enr.Secret, connOpts{clientID: lockID})
	lock.mustSubscribe("", "things/"+lockID+"/cmd/#")
	cmd := "things/" + lockID + "/cmd/unlock"
	unlocked := func() bool {
		select {
		case m := <-lock.msgs:
			return m.topic == cmd
		case <-time.After(quiet):
			return false
		}
	}

	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	an := mustCfg(t, addr, "an", "an-pass")
	peter := mustCfg(t, addr, "peter", "peter-pass")
	ruth := mustCfg(t, addr, "ruth", "ruth-pass")

	// Before anybody claims it, nobody may command it.
	if code := patrick.publish(cmd, `{}`); code != 0x87 {
		t.Fatalf("unclaimed lock: Patrick's unlock got 0x%02x, want 0x87", code)
	}
	// Only a certified installer, only with the right code.
	an.mustRefuse("$config/things/"+lockID+"/claim", `{"code":"`+enr.ClaimCode+`"}`, "certified installer")
	patrick.mustRefuse("$config/things/"+lockID+"/claim", `{"code":"AAAA-AAAA"}`, "claim refused")
	patrick.mustOK("$config/things/"+lockID+"/claim", `{"code":"`+enr.ClaimCode+`"}`)
	patrick.mustRefuse("$config/things/"+lockID+"/claim", `{"code":"`+enr.ClaimCode+`"}`, "claim refused") // used up

	// Patrick installs it: the thing document, and he may operate it.
	patrick.mustOK("$config/things/"+lockID, `{"kind":"actuator","attributes":{"door":"front","installed":"2026-11-25"}}`)
	if code := patrick.publish(cmd, `{}`); code != 0 || !unlocked() {
		t.Fatalf("installer's unlock before hand-over: 0x%02x", code)
	}

	// Hand-over: Patrick invites An as owner; pending until she accepts.
	inv := patrick.mustOK("$config/things/"+lockID+"/relations/an", `{"relation":"owner"}`).Inv
	patrick.mustRefuse("$config/things/"+lockID+"/relations/ruth", `{"relation":"visitor","valid_until":"2026-11-26T00:00:00Z"}`, "installer may only invite the owner")
	if code := an.publish(cmd, `{}`); code != 0x87 {
		t.Fatalf("pending owner's unlock: 0x%02x, want 0x87", code)
	}
	an.subscribe("$config/invitations/an/#")
	if m, ok := an.waitFor("$config/invitations/an/"+inv, 5*time.Second); !ok || !strings.Contains(string(m.Payload), `"from":"patrick"`) {
		t.Fatalf("An does not see Patrick's invitation")
	}
	peter.mustRefuse("$config/invitations/an/"+inv+"/answer", `{"accept":true}`, "not authorized")
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	an.mustRefuse("$config/invitations/an/"+inv+"/answer", `{"accept":true}`, "already accepted")

	// Patrick's access ends at once; An's begins.
	if code := patrick.publish(cmd, `{}`); code != 0x87 || unlocked() {
		t.Fatalf("installer's unlock after hand-over: 0x%02x, want 0x87", code)
	}
	patrick.mustRefuse("$config/things/"+lockID, `{"kind":"actuator"}`, "not authorized")
	if code := an.publish(cmd, `{}`); code != 0 || !unlocked() {
		t.Fatalf("owner's unlock: 0x%02x", code)
	}

	// An invites Peter as co-owner; he accepts and may invite in turn.
	inv = an.mustOK("$config/things/"+lockID+"/relations/peter", `{"relation":"co_owner"}`).Inv
	peter.mustOK("$config/invitations/peter/"+inv+"/answer", `{"accept":true}`)
	if code := peter.publish(cmd, `{}`); code != 0 || !unlocked() {
		t.Fatalf("co-owner's unlock: 0x%02x", code)
	}

	// Peter invites Ruth for tonight (18:00–23:00; the clock says 20:00).
	peter.mustRefuse("$config/things/"+lockID+"/relations/ruth", `{"relation":"visitor"}`, "valid_until: is required")
	inv = peter.mustOK("$config/things/"+lockID+"/relations/ruth",
		`{"relation":"visitor","valid_from":"2026-11-25T18:00:00Z","valid_until":"2026-11-25T23:00:00Z"}`).Inv
	if code := ruth.publish(cmd, `{}`); code != 0x87 {
		t.Fatalf("visitor's unlock before accepting: 0x%02x, want 0x87", code)
	}
	ruth.mustOK("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`)
	if code := ruth.publish(cmd, `{}`); code != 0 || !unlocked() {
		t.Fatalf("visitor's unlock inside her window: 0x%02x", code)
	}
	clock.Set(time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC))
	code := ruth.publish(cmd, `{}`)
	clock.Set(evening)
	if code != 0x87 || unlocked() {
		t.Fatalf("visitor's unlock outside her window: 0x%02x, want 0x87", code)
	}
	// Ruth may not invite, nor see the lock's configuration.
	ruth.mustRefuse("$config/things/"+lockID+"/relations/stranger",
		`{"relation":"visitor","valid_until":"2026-11-25T23:00:00Z"}`, "not authorized")
	if codes := ruth.subscribe("$config/things/" + lockID + "/#"); codes[0] != 0x87 {
		t.Fatalf("visitor subscribing to the lock's configuration: 0x%02x", codes[0])
	}

	// An sees the lock's configuration, retained.
	an.subscribe("$config/things/"+lockID, "$config/things/"+lockID+"/#")
	got := an.collect(time.Second)
	if !strings.Contains(got["$config/things/"+lockID+"/relations/ruth"], `"status":"active"`) ||
		!strings.Contains(got["$config/things/"+lockID+"/relations/peter"], `"relation":"co_owner"`) ||
		!strings.Contains(got["$config/things/"+lockID], `"owner":"an"`) {
		t.Fatalf("An's view of the lock's configuration: %v", got)
	}
	if _, ok := got["$config/things/"+lockID+"/relations/patrick"]; ok {
		t.Fatalf("the installer's ended relation is still shown: %v", got)
	}

	// An revokes Peter: his access ends at once.
	an.mustOK("$config/things/"+lockID+"/relations/peter", ``)
	if code := peter.publish(cmd, `{}`); code != 0x87 || unlocked() {
		t.Fatalf("revoked co-owner's unlock: 0x%02x, want 0x87", code)
	}
	peter.mustRefuse("$config/things/"+lockID+"/relations/stranger",
		`{"relation":"visitor","valid_until":"2026-11-25T23:00:00Z"}`, "not authorized")

	// Every transition is recorded.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	trs, err := veil.Store.Transitions(ctx, "thing:"+lockID)
	if err != nil {
		t.Fatal(err)
	}
	var seq []string
	for _, tr := range trs {
		seq = append(seq, tr.User+":"+tr.Relation+":"+tr.To)
	}
	want := []string{":" + ":enrolled", "patrick:installer:active", "an:owner:pending", "an:owner:active", "patrick:installer:ended",
		"peter:co_owner:pending", "peter:co_owner:active", "ruth:visitor:pending", "ruth:visitor:active", "peter:co_owner:revoked"}
	if strings.Join(seq, " ") != strings.Join(want, " ") {
		t.Fatalf("transitions\n got %v\nwant %v", seq, want)
	}
}

// TestInvitationDeclineAndExpiry: a declined invitation grants nothing; an
// invitation not answered in time expires.
func TestInvitationDeclineAndExpiry(t *testing.T) {
	addr := veil.Addr("mqtt")
	an := mustCfg(t, addr, "an", "an-pass")
	ruth := mustCfg(t, addr, "ruth", "ruth-pass")
	inv := an.mustOK("$config/things/thermo-1/relations/ruth", `{"relation":"visitor","valid_until":"2026-11-26T23:00:00Z"}`).Inv
	ruth.mustOK("$config/invitations/ruth/"+inv+"/answer", `{"accept":false}`)
	ruth.mustRefuse("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`, "already declined")

	inv = an.mustOK("$config/things/thermo-1/relations/ruth", `{"relation":"visitor","valid_until":"2026-12-26T23:00:00Z"}`).Inv
	clock.Set(evening.Add(8 * 24 * time.Hour)) // the default time to answer is 7 days
	r := ruth.ask("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`)
	clock.Set(evening)
	if r.OK || !strings.Contains(r.Error, "expired") {
		t.Fatalf("answering an expired invitation: %+v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, _, err := veil.Store.Invitation(ctx, inv)
	if err != nil || got.Status != "expired" {
		t.Fatalf("invitation status %q (%v), want expired", got.Status, err)
	}
	an.mustRefuse("$config/things/thermo-1/relations/ruth", ``, "no relation to revoke")
}

// TestInvalidPolicyKeepsOldPolicy: a bad policy is answered with the exact
// field error; the one in force stays in force, stored and retained.
func TestInvalidPolicyKeepsOldPolicy(t *testing.T) {
	addr := veil.Addr("mqtt")
	an := mustCfg(t, addr, "an", "an-pass")
	topic := "$config/users/an/policies/doctor-thermo"
	bad := `{"id":"doctor-thermo","priority":10,"effect":"allow","subjects":["role:doctor"],
		"resources":["things/thermo-1/data/temperature"],"actions":["read"],
		"constraints":[{"kind":"accuracy","field":"temperature","step":0.1},{"kind":"accuracy","field":"temperature","step":-1}]}`
	r := an.ask(topic, bad)
	if r.OK || r.Error != "constraints[1].step: must be > 0" || r.puback != 0x99 {
		t.Fatalf("invalid policy: %+v", r)
	}
	an.mustRefuse("$config/users/an/policies/other-id", strings.Replace(bad, `"step":-1`, `"step":1`, 1), `id: must be "other-id"`)

	// The old policy is still enforced: the doctor still sees 0.1 steps.
	doc := connect(t, "doctor", "doctor-pass", connOpts{})
	doc.mustSubscribe("", "things/thermo-1/data/temperature")
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":21.37}`, false)
	if m := doc.next(); m.payload != `{"temperature":21.4}` {
		t.Fatalf("doctor got %s after a rejected policy", m.payload)
	}
	// And it is what is retained.
	an.subscribe(topic)
	m, ok := an.waitFor(topic, 5*time.Second)
	if !ok || !strings.Contains(string(m.Payload), `"step":0.1`) || strings.Contains(string(m.Payload), `"step":-1`) {
		t.Fatalf("retained policy after a rejected change: %v", m)
	}

	// A valid change takes effect on the next message, with its warning.
	good := `{"id":"doctor-thermo","priority":10,"effect":"allow","subjects":["role:doctor"],
		"resources":["things/thermo-1/data/temperature"],"actions":["read","history"],
		"constraints":[{"kind":"accuracy","field":"temperature","step":1}]}`
	r = an.mustOK(topic, good)
	if len(r.Warnings) == 0 || !strings.Contains(r.Warnings[0], "infer occupancy") {
		t.Fatalf("warnings %v", r.Warnings)
	}
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":21.37}`, false)
	if m := doc.next(); m.payload != `{"temperature":21}` {
		t.Fatalf("doctor got %s after the change", m.payload)
	}
	an.mustOK(topic, strings.Replace(good, `"step":1}`, `"step":0.1}`, 1)) // restore the household
}

// TestNonOwnerConfigRefusedAndInvisible: a stranger's config publish is
// refused (and answered, also over MQTT 3.1.1), changes nothing, and the
// stranger cannot see configuration that is not theirs, existing or not.
func TestNonOwnerConfigRefusedAndInvisible(t *testing.T) {
	addr := veil.Addr("mqtt")
	s := mustCfg(t, addr, "stranger", "stranger-pass")
	for _, topic := range []string{
		"$config/users/an/policies/doctor-thermo", "$config/things/thermo-1", "$config/things/no-such-thing",
		"$config/things/thermo-1/relations/stranger", "$config/places/home-an/relations/stranger",
		"$config/invitations/an/x/answer",
	} {
		r := s.ask(topic, `{"relation":"owner"}`)
		if r.OK || r.Error != "not authorized" || r.puback != 0x87 {
			t.Fatalf("stranger on %s: %+v", topic, r)
		}
	}
	codes := s.subscribe("$config/users/an/#", "$config/things/thermo-1/#", "$config/things/no-such-thing/#", "$config/#", "$config/things/+")
	if codes[0] != 0x87 || codes[1] != 0x87 || codes[2] != 0x87 || codes[3] > 2 || codes[4] > 2 {
		t.Fatalf("stranger's SUBACK codes % x", codes)
	}
	got := s.collect(time.Second)
	for topic := range got {
		if !strings.HasPrefix(topic, "$config/things/stranger-sensor") {
			t.Fatalf("stranger sees %s", topic)
		}
	}
	if _, ok := got["$config/things/stranger-sensor"]; !ok {
		t.Fatalf("the stranger does not see their own sensor's document: %v", got)
	}

	// MQTT 3.1.1: the answer comes on $config/replies/{clientId}.
	sub, pub := needMosquitto(t, "mosquitto_sub"), needMosquitto(t, "mosquitto_pub")
	host, port, _ := net.SplitHostPort(addr)
	listen := exec.Command(sub, "-V", "mqttv311", "-h", host, "-p", port, "-u", "stranger", "-P", "stranger-pass",
		"-i", "stranger-311-watch", "-t", "$config/replies/stranger-311/#", "-C", "1", "-W", "5")
	var out strings.Builder
	listen.Stdout = &out
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	// The watcher has its own client id, so it may not read stranger-311's replies…
	if b, err := exec.Command(pub, "-V", "mqttv311", "-h", host, "-p", port, "-u", "stranger", "-P", "stranger-pass",
		"-i", "stranger-311", "-q", "1", "-r", "-t", "$config/things/thermo-1", "-m", `{"kind":"sensor"}`).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, b)
	}
	_ = listen.Wait()
	if out.Len() != 0 {
		t.Fatalf("another client id read the replies: %s", out.String())
	}
	// …but a 3.1.1 client reading its own replies gets the answer.
	r311 := run311(t, host, port, "stranger", "stranger-pass", "$config/things/thermo-1", `{"kind":"sensor"}`)
	if r311.OK || r311.Error != "not authorized" || r311.Topic != "$config/things/thermo-1" {
		t.Fatalf("3.1.1 reply %+v", r311)
	}
	r311 = run311(t, host, port, "an", "an-pass", "$config/things/thermo-1", `{"kind":"sensor","streams":["temperature","humidity"],"place":"home-an"}`)
	if !r311.OK {
		t.Fatalf("3.1.1 owner's reply %+v", r311)
	}
}

// run311 publishes a config document over MQTT 3.1.1 from a client that
// also reads its own replies ($config/replies/{clientId}), with a raw
// 3.1.1 session, and returns the answer.
func run311(t *testing.T, host, port, user, pass, topic, payload string) reply {
	t.Helper()
	c := dial311(t, net.JoinHostPort(host, port), user, pass)
	defer c.Close()
	c.subscribe("$config/replies/" + c.id)
	c.publishRetained(topic, payload)
	var r reply
	if err := json.Unmarshal(c.next(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestEnrolment: the happy path, an unknown serial, enrolling twice, and
// brute force against a factory secret and against the enrolment.
func TestEnrolment(t *testing.T) {
	addr := veil.Addr("mqtt")
	addFactory(t, "TH-10-0100", "factory-th")

	r, err := enrollDevice(t, addr, "", "TH-10-0100", "factory-th", `{"kind":"sensor","streams":["temperature","humidity"]}`)
	if err != nil || !r.OK || r.Thing != "th-10-0100" || len(r.Secret) < 24 || len(r.ClaimCode) != 9 {
		t.Fatalf("enrolment: %v %+v", err, r)
	}
	// The secret is stored hashed, and works once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if h, _ := veil.Store.SecretHash(ctx, "th-10-0100"); !strings.HasPrefix(h, "$argon2id$") || strings.Contains(h, r.Secret) {
		t.Fatalf("stored secret is not an argon2id hash")
	}
	dev := connect(t, "th-10-0100", r.Secret, connOpts{clientID: "th-10-0100"})
	if code := dev.publish("things/th-10-0100/data/temperature", `{"temperature":20}`, false); code != 0 {
		t.Fatalf("enrolled device's publish: 0x%02x", code)
	}
	if code := dev.publish("things/th-10-0100/data/location", `{"lat":1}`, false); code != 0x87 {
		t.Fatalf("publish of an undeclared stream: 0x%02x", code)
	}
	// Deliberate failures come from their own loopback address: the shared
	// broker refuses an address after 10 failed logins a minute.
	if _, err := dialCfg(t, addr, "127.0.0.6", "th-10-0100", "wrong", "th-10-0100"); err == nil {
		t.Fatal("enrolled thing connected with a wrong secret")
	}

	// Enrolling again is refused once the thing is claimed (before, it is
	// answered afresh: TestEnrolAgainReplacesSecretAndClaimCode).
	mustCfg(t, addr, "patrick", "patrick-pass").mustOK("$config/things/th-10-0100/claim", `{"code":"`+r.ClaimCode+`"}`)
	r, err = enrollDevice(t, addr, "", "TH-10-0100", "factory-th", "")
	if err != nil || r.OK || r.Error != "already enrolled" {
		t.Fatalf("second enrolment: %v %+v", err, r)
	}
	// An unknown serial, or a wrong factory secret, cannot even connect.
	if _, err := enrollDevice(t, addr, "127.0.0.3", "XX-0000", "whatever", ""); err == nil {
		t.Fatal("an unknown serial connected")
	}
	// A device may only ask for its own serial, and nothing else.
	addFactory(t, "TH-10-0101", "factory-th-1")
	d, err := dialCfg(t, addr, "", "factory:TH-10-0101", "factory-th-1", "enroll-TH-10-0101")
	if err != nil {
		t.Fatal(err)
	}
	if code := d.publish("$enroll/TH-10-0100", ``); code != 0x87 {
		t.Fatalf("enrolling another serial: 0x%02x", code)
	}
	if code := d.publish("things/th-10-0100/data/temperature", `{}`); code != 0x87 {
		t.Fatalf("enrolling device publishing data: 0x%02x", code)
	}
	if codes := d.subscribe("$config/replies/enroll-TH-10-0100/#", "things/#", "$config/things/#"); codes[0] != 0x87 || codes[2] != 0x87 {
		t.Fatalf("enrolling device's SUBACK % x", codes)
	}
	if _, err := dialCfg(t, addr, "127.0.0.6", "factory:TH-10-0101", "factory-th-1", "TH-10-0101"); err == nil {
		t.Fatal("a factory login with another client id connected")
	}

	// Brute force on a factory secret (from its own address, so the
	// per-address limit of other tests is not touched): after 5 wrong
	// guesses even the right secret is refused.
	addFactory(t, "TH-10-0102", "factory-th-2")
	for i := range 5 {
		if _, err := enrollDevice(t, addr, "127.0.0.4", "TH-10-0102", "guess-"+string(rune('a'+i)), ""); err == nil {
			t.Fatal("a wrong factory secret connected")
		}
	}
	if _, err := enrollDevice(t, addr, "127.0.0.5", "TH-10-0102", "factory-th-2", ""); err == nil {
		t.Fatal("the right factory secret was accepted after 5 wrong guesses")
	}
	// Repeated refused enrolments: too many attempts.
	var last reply
	for range 6 {
		if last, err = enrollDevice(t, addr, "", "TH-10-0100", "factory-th", ""); err != nil {
			t.Fatal(err)
		}
	}
	if last.OK || last.Error != "too many attempts" {
		t.Fatalf("sixth refused enrolment: %+v", last)
	}
	// The factory entry records the enrolment.
	e, _, err := veil.Store.Factory(ctx, "TH-10-0100")
	if err != nil || e.Thing != "th-10-0100" || e.EnrolledAt.IsZero() {
		t.Fatalf("factory entry %+v %v", e, err)
	}
	_ = mongo.CollFactory
}

// TestAuditDoctorDiagnosis: the owner reads, live and by a v5 request, the
// doctor's constrained reads of her location under the purpose diagnosis.
func TestAuditDoctorDiagnosis(t *testing.T) {
	addr := veil.Addr("mqtt")
	an := mustCfg(t, addr, "an", "an-pass")
	an.subscribe("$config/users/an/audit")
	s := mustCfg(t, addr, "stranger", "stranger-pass")
	if codes := s.subscribe("$config/users/an/audit"); codes[0] != 0x87 {
		t.Fatalf("stranger subscribing to An's audit: 0x%02x", codes[0])
	}

	doc := connect(t, "doctor", "doctor-pass", connOpts{})
	doc.mustSubscribe("diagnosis", "things/watch-1/data/location")
	watch := connect(t, "watch-1", "watch-1-secret", connOpts{clientID: "watch-1"})
	for range 3 {
		watch.publish("things/watch-1/data/location", `{"lat":48.7758,"lon":9.1829}`, false)
		if m := doc.next(); m.payload != `{"lat":48.78,"lon":9.18}` {
			t.Fatalf("doctor got %s", m.payload)
		}
	}
	r := an.mustOK("$config/users/an/audit/query", `{"since":"1h"}`)
	var found *auditRecord
	for i, rec := range r.Records {
		if rec.Who == "doctor" && rec.Thing == "watch-1" && rec.Stream == "location" && rec.Purpose == "diagnosis" {
			found = &r.Records[i]
		}
	}
	if found == nil || found.Effect != "constrained" || found.Action != "read" || found.Rule != "policy" ||
		found.Policy != "doctor-location" || found.Count < 3 {
		t.Fatalf("audit records %+v", r.Records)
	}
	// Live: the next flush reaches An.
	watch.publish("things/watch-1/data/location", `{"lat":48.7758,"lon":9.1829}`, false)
	doc.next()
	m, ok := an.waitFor("$config/users/an/audit", 10*time.Second)
	if !ok || !strings.Contains(string(m.Payload), `"purpose":"diagnosis"`) || !strings.Contains(string(m.Payload), `"effect":"constrained"`) {
		t.Fatalf("live audit: %v", m)
	}
	// Nobody else may ask for An's audit.
	s.mustRefuse("$config/users/an/audit/query", `{"since":"1h"}`, "not authorized")
	an.mustRefuse("$config/users/an/audit/query", `{"since":"yesterday"}`, "since: not an RFC 3339 time")
}

// TestResponseTopicConfined: the broker never answers on a response topic
// outside the publisher's own $config/replies/{clientId}/ — else a client
// could make the broker (which bypasses the ACL) publish a command for it.
func TestResponseTopicConfined(t *testing.T) {
	addr := veil.Addr("mqtt")
	lock := connect(t, "lock-1", "lock-1-secret", connOpts{clientID: "lock-1"})
	lock.mustSubscribe("", "things/lock-1/cmd/#")
	s := mustCfg(t, addr, "stranger", "stranger-pass")
	for _, rt := range []string{"things/lock-1/cmd/unlock", "$config/replies/lock-1", "$config/replies/" + s.id + "-other/x"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = s.pc.Publish(ctx, &paho.Publish{Topic: "$config/things/lock-1", QoS: 1, Payload: []byte(`{}`),
			Properties: &paho.PublishProperties{ResponseTopic: rt, CorrelationData: []byte("c")}})
		cancel()
		m, ok := s.waitFor(s.prefix, 5*time.Second)
		if !ok || !strings.Contains(string(m.Payload), `"error":"not authorized"`) {
			t.Fatalf("response topic %s: the answer did not come on %s", rt, s.prefix)
		}
	}
	lock.nothing(quiet)
}

// TestThingDeleted: an empty thing document deletes the thing (its owner
// may, its installer may not): its secret and relations go with it.
func TestThingDeleted(t *testing.T) {
	addr := veil.Addr("mqtt")
	addFactory(t, "TH-10-0200", "factory-200")
	enr, err := enrollDevice(t, addr, "", "TH-10-0200", "factory-200", `{"kind":"sensor","streams":["temperature"]}`)
	if err != nil || !enr.OK {
		t.Fatalf("enrolment: %v %+v", err, enr)
	}
	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	an := mustCfg(t, addr, "an", "an-pass")
	patrick.mustOK("$config/things/"+enr.Thing+"/claim", `{"code":"`+strings.ToLower(enr.ClaimCode)+`"}`)
	patrick.mustRefuse("$config/things/"+enr.Thing, ``, "not authorized")
	inv := patrick.mustOK("$config/things/"+enr.Thing+"/relations/an", `{"relation":"owner"}`).Inv
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	if _, err := dial(t, enr.Thing, enr.Secret, connOpts{clientID: enr.Thing}); err != nil {
		t.Fatalf("the thing cannot connect: %v", err)
	}
	an.mustOK("$config/things/"+enr.Thing, ``)
	if _, err := dialCfg(t, addr, "127.0.0.6", enr.Thing, enr.Secret, enr.Thing); err == nil {
		t.Fatal("a deleted thing connected")
	}
	for _, topic := range []string{"$config/things/" + enr.Thing, "$config/things/" + enr.Thing + "/relations/an"} {
		if _, ok := veil.MQTT.Topics.Retained.Get(topic); ok {
			t.Fatalf("%s is still retained after the thing was deleted", topic)
		}
	}
	if _, ok := veil.Engine.Thing(enr.Thing); ok {
		t.Fatal("the deleted thing is still in the engine")
	}
}

// TestEnrolmentStoppedPartWayCanBeCompleted: a serial marked enrolled whose
// thing was never created (a mark that timed out yet landed) enrols afresh.
func TestEnrolmentStoppedPartWayCanBeCompleted(t *testing.T) {
	addFactory(t, "TH-10-0110", "factory-th-10")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if won, err := veil.Store.MarkEnrolled(ctx, "TH-10-0110", "th-10-0110", time.Now()); err != nil || !won {
		t.Fatalf("mark: %v %v", won, err)
	}
	r, err := enrollDevice(t, veil.Addr("mqtt"), "", "TH-10-0110", "factory-th-10", "")
	if err != nil || !r.OK || r.Thing != "th-10-0110" || r.Secret == "" {
		t.Fatalf("enrolment after a half-done one: %v %+v", err, r)
	}
	mustCfg(t, veil.Addr("mqtt"), "patrick", "patrick-pass").mustOK("$config/things/th-10-0110/claim", `{"code":"`+r.ClaimCode+`"}`)
	r, err = enrollDevice(t, veil.Addr("mqtt"), "", "TH-10-0110", "factory-th-10", "")
	if err != nil || r.OK || r.Error != "already enrolled" {
		t.Fatalf("a completed and claimed enrolment must not repeat: %v %+v", err, r)
	}
}

// TestClaimGuessesCountPerInstaller: wrong claims count against the
// installer making them, also for things that do not exist: five claims of
// made-up things stop his claims for the window (they once counted under
// keys he chose, each a fresh five, and filled the limiter until it
// started over). Another installer is not held up by them.
func TestClaimGuessesCountPerInstaller(t *testing.T) {
	addr := veil.Addr("mqtt")
	addFactory(t, "TH-10-0300", "factory-300")
	enr, err := enrollDevice(t, addr, "", "TH-10-0300", "factory-300", `{"kind":"sensor","streams":["temperature"]}`)
	if err != nil || !enr.OK {
		t.Fatalf("enrolment: %v %+v", err, enr)
	}
	quentin := mustCfg(t, addr, "quentin", "quentin-pass")
	for i := range 5 {
		quentin.mustRefuse(fmt.Sprintf("$config/things/made-up-%d/claim", i), `{"code":"AAAA-AAAA"}`, "claim refused")
	}
	quentin.mustRefuse("$config/things/"+enr.Thing+"/claim", `{"code":"`+enr.ClaimCode+`"}`, "too many attempts")
	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	patrick.mustOK("$config/things/"+enr.Thing+"/claim", `{"code":"`+enr.ClaimCode+`"}`)
}

// TestInheritedStartsAreOnesTheInviterCouldGive: an invitation without
// valid_from keeps the start of a say its invitee holds, or of a window
// pending for her, only where the inviter could have given that start
// himself: never from before his own say (ruth's void invitation from
// 2020, laundered through peter, a co-owner since tonight), never one to
// come (a superseded invitation from next week), and never for a
// hand-over, which starts at once.
func TestInheritedStartsAreOnesTheInviterCouldGive(t *testing.T) {
	addr := veil.Addr("mqtt")
	handedOver := func(serial string) string {
		addFactory(t, serial, "factory-"+serial)
		enr, err := enrollDevice(t, addr, "", serial, "factory-"+serial, `{"kind":"actuator"}`)
		if err != nil || !enr.OK {
			t.Fatalf("enrolment: %v %+v", err, enr)
		}
		mustCfg(t, addr, "patrick", "patrick-pass").mustOK("$config/things/"+enr.Thing+"/claim", `{"code":"`+enr.ClaimCode+`"}`)
		return enr.Thing
	}
	relOf := func(thing, user string, rel policies.Relation) policies.Relationship {
		for _, r := range veil.Engine.Relationships(thing, "") {
			if r.User == user && r.Relation == rel {
				return r
			}
		}
		t.Fatalf("no %s relation of %s on %s", rel, user, thing)
		return policies.Relationship{}
	}
	an, peter, ruth, stranger := mustCfg(t, addr, "an", "an-pass"), mustCfg(t, addr, "peter", "peter-pass"),
		mustCfg(t, addr, "ruth", "ruth-pass"), mustCfg(t, addr, "stranger", "stranger-pass")
	patrick, admin := mustCfg(t, addr, "patrick", "patrick-pass"), mustCfg(t, addr, "admin", "admin-pass")

	// Laundering a void invitation's start.
	id := handedOver("TH-IS-0001")
	inv := patrick.mustOK("$config/things/"+id+"/relations/an", `{"relation":"owner"}`).Inv
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	rels := "$config/things/" + id + "/relations/"
	inv = an.mustOK(rels+"ruth", `{"relation":"co_owner","valid_from":"2020-01-01T00:00:00Z"}`).Inv
	ruth.mustOK("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`)
	inv = an.mustOK(rels+"peter", `{"relation":"co_owner"}`).Inv
	peter.mustOK("$config/invitations/peter/"+inv+"/answer", `{"accept":true}`)
	ruth.mustOK(rels+"stranger", `{"relation":"co_owner","valid_from":"2020-01-01T00:00:00Z"}`)
	an.mustOK(rels+"ruth", ``) // ruth revoked: her invitation is void
	inv = peter.mustOK(rels+"stranger", `{"relation":"co_owner"}`).Inv
	stranger.mustOK("$config/invitations/stranger/"+inv+"/answer", `{"accept":true}`)
	if got, peters := relOf(id, "stranger", policies.RelCoOwner), relOf(id, "peter", policies.RelCoOwner); got.ValidFrom.Before(peters.ValidFrom) {
		t.Errorf("peter (a say since %s) gave stranger a say from %s", peters.ValidFrom, got.ValidFrom)
	}

	// A superseded start to come.
	next := clock.Now().Add(7 * 24 * time.Hour).UTC().Format(time.RFC3339)
	an.mustOK(rels+"ruth", `{"relation":"co_owner","valid_from":"`+next+`"}`)
	inv = an.mustOK(rels+"ruth", `{"relation":"co_owner"}`).Inv
	ruth.mustOK("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`)
	if got := relOf(id, "ruth", policies.RelCoOwner); got.ValidFrom.After(clock.Now()) {
		t.Errorf("an invitation without valid_from, accepted now, starts %s", got.ValidFrom)
	}

	// A hand-over over a pending relation to come.
	id = handedOver("TH-IS-0002")
	tomorrow := clock.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	admin.mustOK("$config/things/"+id+"/relations/an", `{"relation":"co_owner","valid_from":"`+tomorrow+`"}`)
	inv = patrick.mustOK("$config/things/"+id+"/relations/an", `{"relation":"owner"}`).Inv
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	if th, _ := veil.Engine.Thing(id); th.Owner != "an" {
		t.Errorf("after the hand-over the owner of record is %q", th.Owner)
	}
}

// TestLaterCoOwnerExtendingAnEarlierOneKeepsWhatHeCouldGive: peter, a
// co-owner since after ruth, gives ruth (a co-owner already) a new window
// without valid_from. Her start (before his) is not inherited, so the new
// window starts when she accepts: she loses her say's history, even the
// part since peter's own start, which he could have given her explicitly.
// (Her old start is gone from the engine at the invitation already: the
// pending relation replaced her active one.) An inherited start before the
// inviter's should be raised to his, as a visitor's valid_from is.
func TestLaterCoOwnerExtendingAnEarlierOneKeepsWhatHeCouldGive(t *testing.T) {
	addr := veil.Addr("mqtt")
	serial := "TH-RV-EXT1"
	addFactory(t, serial, "factory-"+serial)
	enr, err := enrollDevice(t, addr, "", serial, "factory-"+serial, `{"kind":"actuator"}`)
	if err != nil || !enr.OK {
		t.Fatalf("enrolment: %v %+v", err, enr)
	}
	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	patrick.mustOK("$config/things/"+enr.Thing+"/claim", `{"code":"`+enr.ClaimCode+`"}`)
	id := enr.Thing
	relOf := func(user string) policies.Relationship {
		for _, r := range veil.Engine.Relationships(id, "") {
			if r.User == user && r.Relation == policies.RelCoOwner {
				return r
			}
		}
		t.Fatalf("no co_owner relation of %s on %s", user, id)
		return policies.Relationship{}
	}
	an, peter, ruth := mustCfg(t, addr, "an", "an-pass"), mustCfg(t, addr, "peter", "peter-pass"), mustCfg(t, addr, "ruth", "ruth-pass")
	inv := patrick.mustOK("$config/things/"+id+"/relations/an", `{"relation":"owner"}`).Inv
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	rels := "$config/things/" + id + "/relations/"

	inv = an.mustOK(rels+"ruth", `{"relation":"co_owner"}`).Inv
	ruth.mustOK("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`)
	ruths := relOf("ruth").ValidFrom
	t.Cleanup(func() { clock.Set(evening) })
	clock.Set(evening.Add(time.Hour))
	inv = an.mustOK(rels+"peter", `{"relation":"co_owner"}`).Inv
	peter.mustOK("$config/invitations/peter/"+inv+"/answer", `{"accept":true}`)
	peters := relOf("peter").ValidFrom
	clock.Set(evening.Add(2 * time.Hour))

	// peter extends ruth's say by a year.
	until := clock.Now().Add(365 * 24 * time.Hour).UTC().Format(time.RFC3339)
	inv = peter.mustOK(rels+"ruth", `{"relation":"co_owner","valid_until":"`+until+`"}`).Inv
	ruth.mustOK("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`)
	t.Logf("ruth %s peter %s now %s", ruths, peters, relOf("ruth").ValidFrom)
	if got := relOf("ruth").ValidFrom; got.After(peters) {
		t.Errorf("ruth, a co-owner since %s, got a new window from peter (since %s) starting %s: her say's history since peter's start is lost",
			ruths.Format(time.RFC3339Nano), peters.Format(time.RFC3339Nano), got.Format(time.RFC3339Nano))
	}
}
