package broker_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/ferretdb"
	"github.com/veil-iot/veil/broker"
)

// TestEnforcementSurvivesMetadataStoreOutage: a MongoDB (here a FerretDB the
// test runs itself) that goes away after start leaves enforcement running on
// the loaded state; /readyz says the store is unavailable.
func TestEnforcementSurvivesMetadataStoreOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := ferretdb.Start(ctx, t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := broker.Defaults()
	cfg.MQTT, cfg.HTTP, cfg.DataDir, cfg.MongoURI = "127.0.0.1:0", "127.0.0.1:0", t.TempDir(), store.URI()
	cfg.Bootstrap, cfg.LogLevel = "testdata/e2e/household.yaml", "warn"
	b, err := broker.Start(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + b.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the store down: %d, want 503", resp.StatusCode)
	}

	got := map[string]chan string{"an": make(chan string, 4), "doctor": make(chan string, 4), "stranger": make(chan string, 4)}
	dialAs := func(clientID, user, pass string, ch chan string) *paho.Client {
		conn, err := net.Dial("tcp", b.Addr("mqtt"))
		if err != nil {
			t.Fatal(err)
		}
		pc := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				if ch != nil {
					ch <- string(pr.Packet.Payload)
				}
				return true, nil
			}}})
		if _, err := pc.Connect(ctx, &paho.Connect{ClientID: clientID, Username: user, UsernameFlag: true,
			Password: []byte(pass), PasswordFlag: true, CleanStart: true, KeepAlive: 30}); err != nil {
			t.Fatalf("%s cannot connect during the outage: %v", user, err)
		}
		t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
		return pc
	}
	for user, ch := range got {
		pc := dialAs(user+"-outage", user, user+"-pass", ch)
		filter := "things/thermo-1/data/temperature"
		if user == "stranger" {
			filter = "things/+/data/#"
		}
		if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter}}}); err != nil {
			t.Fatal(err)
		}
	}
	thermo := dialAs("thermo-1", "thermo-1", "thermo-1-secret", nil)
	if _, err := thermo.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", QoS: 1, Payload: []byte(`{"temperature":23.45}`)}); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{"an": `{"temperature":23.45}`, "doctor": `{"temperature":23.5}`} {
		select {
		case m := <-got[user]:
			if m != want {
				t.Fatalf("%s got %s, want %s", user, m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s got nothing during the outage", user)
		}
	}
	select {
	case m := <-got["stranger"]:
		t.Fatalf("stranger got %s during the outage", m)
	case <-time.After(300 * time.Millisecond):
	}
}
