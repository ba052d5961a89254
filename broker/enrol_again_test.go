package broker_test

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/operators/agent"
)

// askAndVanish is a device's enrolment whose answer is lost: it publishes
// $enroll/{serial} with a response topic but never subscribes to it, and
// disconnects once the broker has acknowledged (and so handled) the request.
func askAndVanish(t *testing.T, serial, secret string) {
	t.Helper()
	conn, err := net.Dial("tcp", veil.Addr("mqtt"))
	if err != nil {
		t.Fatal(err)
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "enroll-" + serial, CleanStart: true, KeepAlive: 30,
		Username: "factory:" + serial, UsernameFlag: true, Password: []byte(secret), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	pr, err := pc.Publish(ctx, &paho.Publish{Topic: "$enroll/" + serial, QoS: 1, Payload: []byte(`{"kind":"sensor","streams":["temperature"]}`),
		Properties: &paho.PublishProperties{ResponseTopic: "$config/replies/enroll-" + serial + "/enroll", CorrelationData: []byte("lost")}})
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("the first enrolment request: %v %+v", err, pr)
	}
	_ = pc.Disconnect(&paho.Disconnect{})
	<-pc.Done()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, ok := veil.MQTT.Clients.Get("enroll-" + serial); !ok {
			return // gone: the next connection with this client id is not taken down with it
		}
	}
}

// TestEnrolmentAnswerLostEnrolsAgain: a device that never got its
// enrolment answer (it timed out, its connection dropped) asks again and
// gets a secret that works — it was refused "already enrolled" for good
// (exit 3, not restarted) and its serial could never enrol again.
func TestEnrolmentAnswerLostEnrolsAgain(t *testing.T) {
	const serial = "RV-EA-0001"
	addFactory(t, serial, "factory-"+serial)
	askAndVanish(t, serial, "factory-"+serial)
	if _, ok := veil.Engine.Thing("rv-ea-0001"); !ok {
		t.Fatal("the first request did not enrol the thing")
	}

	u, _ := url.Parse("mqtt://" + veil.Addr("mqtt"))
	o := agent.Options{Broker: u, Serial: serial, FactorySecret: "factory-" + serial,
		CredentialsFile: filepath.Join(t.TempDir(), "th.json"), Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	creds, err := agent.EnsureEnrolled(ctx, o, agent.Enrolment{Kind: "sensor", Streams: []string{"temperature"}})
	if err != nil {
		t.Fatalf("enrolling again after a lost answer: %v", err)
	}
	if creds.Thing != "rv-ea-0001" || creds.Secret == "" || creds.ClaimCode == "" {
		t.Fatalf("credentials %+v", creds)
	}
	dev := connect(t, creds.Thing, creds.Secret, connOpts{clientID: creds.Thing})
	if code := dev.publish("things/"+creds.Thing+"/data/temperature", `{"temperature":20}`, false); code != 0 {
		t.Fatalf("the thing's publish with its new secret: 0x%02x", code)
	}
	mustCfg(t, veil.Addr("mqtt"), "patrick", "patrick-pass").mustOK("$config/things/"+creds.Thing+"/claim", `{"code":"`+creds.ClaimCode+`"}`)
}

// TestEnrolAgainReplacesSecretAndClaimCode: enrolling again before a claim
// issues a new secret and claim code; the old ones stop working, a
// connection made with the old secret is closed. Once claimed, the serial
// is "already enrolled" and the secret stays.
func TestEnrolAgainReplacesSecretAndClaimCode(t *testing.T) {
	const serial = "RV-EA-0002"
	addr := veil.Addr("mqtt")
	addFactory(t, serial, "factory-"+serial)
	first, err := enrollDevice(t, addr, "", serial, "factory-"+serial, `{"kind":"sensor","streams":["temperature"]}`)
	if err != nil || !first.OK {
		t.Fatalf("enrolment: %v %+v", err, first)
	}
	old := connect(t, first.Thing, first.Secret, connOpts{clientID: first.Thing})

	again, err := enrollDevice(t, addr, "", serial, "factory-"+serial, `{"kind":"sensor","streams":["temperature"]}`)
	if err != nil || !again.OK || again.Thing != first.Thing {
		t.Fatalf("enrolling again before a claim: %v %+v", err, again)
	}
	if again.Secret == "" || again.Secret == first.Secret || again.ClaimCode == "" || again.ClaimCode == first.ClaimCode {
		t.Fatalf("enrolling again did not issue a new secret and claim code: %+v", again)
	}
	select {
	case <-old.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection made with the old secret is still open")
	}
	if _, err := dialCfg(t, addr, "127.0.0.7", first.Thing, first.Secret, first.Thing); err == nil {
		t.Fatal("the old secret still connects")
	}
	connect(t, again.Thing, again.Secret, connOpts{clientID: again.Thing})
	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	patrick.mustRefuse("$config/things/"+first.Thing+"/claim", `{"code":"`+first.ClaimCode+`"}`, "claim refused")
	patrick.mustOK("$config/things/"+first.Thing+"/claim", `{"code":"`+again.ClaimCode+`"}`)

	r, err := enrollDevice(t, addr, "", serial, "factory-"+serial, "")
	if err != nil || r.OK || r.Error != "already enrolled" || r.Secret != "" {
		t.Fatalf("enrolling after the claim: %v %+v, want already enrolled", err, r)
	}
	connect(t, again.Thing, again.Secret, connOpts{clientID: again.Thing}) // the secret stays
}

// TestEnrolAgainRefusedOnceAnyoneHasASay: whatever gives somebody a say
// over the thing ends its enrolling again: a claim, an admin's invitation
// (a pending relation), a place (whose relations hold for the thing).
func TestEnrolAgainRefusedOnceAnyoneHasASay(t *testing.T) {
	addr := veil.Addr("mqtt")
	tests := []struct {
		serial string
		say    func(thing, code string)
	}{
		{"RV-EA-0010", func(thing, code string) {
			mustCfg(t, addr, "patrick", "patrick-pass").mustOK("$config/things/"+thing+"/claim", `{"code":"`+code+`"}`)
		}},
		{"RV-EA-0011", func(thing, _ string) {
			mustCfg(t, addr, "admin", "admin-pass").mustOK("$config/things/"+thing+"/relations/an", `{"relation":"owner"}`)
		}},
		{"RV-EA-0012", func(thing, _ string) {
			mustCfg(t, addr, "admin", "admin-pass").mustOK("$config/things/"+thing, `{"kind":"sensor","streams":["temperature"],"place":"home-an"}`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.serial, func(t *testing.T) {
			addFactory(t, tt.serial, "factory-"+tt.serial)
			enr, err := enrollDevice(t, addr, "", tt.serial, "factory-"+tt.serial, `{"kind":"sensor","streams":["temperature"]}`)
			if err != nil || !enr.OK {
				t.Fatalf("enrolment: %v %+v", err, enr)
			}
			tt.say(enr.Thing, enr.ClaimCode)
			r, err := enrollDevice(t, addr, "", tt.serial, "factory-"+tt.serial, "")
			if err != nil || r.OK || r.Error != "already enrolled" {
				t.Fatalf("enrolling again: %v %+v, want already enrolled", err, r)
			}
			// The thing keeps its secret.
			connect(t, enr.Thing, enr.Secret, connOpts{clientID: enr.Thing})
		})
	}
}
