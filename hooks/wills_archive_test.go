package hooks_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// memoryArchive is an archive sink and history source in memory.
type memoryArchive struct {
	mu       sync.Mutex
	readings []hooks.Reading
}

func (a *memoryArchive) Archive(r hooks.Reading) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	r.Payload = append([]byte(nil), r.Payload...)
	a.readings = append(a.readings, r)
	return nil
}

func (a *memoryArchive) History(_ context.Context, thing, stream string, from, to time.Time, fn func(time.Time, []byte) bool) error {
	a.mu.Lock()
	rs := append([]hooks.Reading(nil), a.readings...)
	a.mu.Unlock()
	for _, r := range rs {
		if r.Thing == thing && r.Stream == stream && !r.Received.Before(from) && r.Received.Before(to) && !fn(r.Received, r.Payload) {
			break
		}
	}
	return nil
}

// TestWillIsArchivedAsAReading: a privacy hub whose will is
// {"private":true} (private while it is offline) drops; live, the
// camera's images are then withheld from the doctor (the will is the
// stream's latest reading). The will is archived too, so history withholds
// them as well: mochi sends a will without OnPublish, and the archive
// still said private:false.
func TestWillIsArchivedAsAReading(t *testing.T) {
	live := hooks.NewLiveValues()
	e := policies.NewEngine(policies.Options{Secret: []byte("test"), Context: live})
	for _, u := range []string{"an", "doctor"} {
		must(t, e.PutUser(policies.User{Name: u}))
	}
	must(t, e.PutThing(policies.Thing{ID: "hub-1", Owner: "an", Kind: "hub", Streams: []string{"ctl"}}))
	must(t, e.PutThing(policies.Thing{ID: "cam-1", Owner: "an", Kind: "camera", Streams: []string{"image"}}))
	for _, doc := range []string{
		`{"id":"private","priority":1,"effect":"deny","subjects":["user:doctor"],"resources":["things/cam-1/data/image"],
		  "actions":["read","history"],"when":{"attr":"data.hub-1.ctl.private","op":"eq","value":true}}`,
		`{"id":"doctor","priority":2,"effect":"allow","subjects":["user:doctor"],"resources":["things/cam-1/data/image"],"actions":["read","history"]}`,
	} {
		p, err := policies.ParsePolicy([]byte(doc))
		must(t, err)
		must(t, e.PutPolicy("an", p))
	}
	creds := hooks.NewCredentials()
	for name, secret := range map[string]string{"user:an": "an", "user:doctor": "doctor", "thing:hub-1": "hub-1", "thing:cam-1": "cam-1"} {
		h, err := argon2id.CreateHash(secret, fastHash)
		must(t, err)
		creds.Set(name, h)
	}
	arch := &memoryArchive{}
	var hist *hooks.History
	srv, addr, enf := serve(t, e, creds, func(c *hooks.EnforcerConfig) {
		c.Live = live
		hist = hooks.NewHistory(hooks.HistoryConfig{Engine: e, Sessions: c.Sessions, Server: c.Server, Source: arch, Log: zerolog.Nop()})
		c.System = append(c.System, hist)
	})
	t.Cleanup(hist.Close)
	archiver := hooks.NewArchiver(hooks.ArchiverConfig{Engine: e, Sink: arch, Log: zerolog.Nop(), Live: live})
	must(t, srv.AddHook(archiver, nil))
	enf.ArchiveWills(archiver.ArchiveWill)

	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	hub := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = hub.Connect(ctx, &paho.Connect{ClientID: "hub-1", Username: "hub-1", UsernameFlag: true, Password: []byte("hub-1"), PasswordFlag: true,
		CleanStart: true, KeepAlive: 30, WillMessage: &paho.WillMessage{Topic: "things/hub-1/data/ctl", Payload: []byte(`{"private":true}`), QoS: 1}})
	cancel()
	must(t, err)
	pub := func(c *paho.Client, topic, payload string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
		must(t, err)
	}
	pub(hub, "things/hub-1/data/ctl", `{"private":false}`)
	var doctorLive counter
	subscribe(t, dialCounting(t, addr, "doctor-live", "doctor", "doctor", &doctorLive), "things/cam-1/data/image")
	_ = conn.Close() // the hub drops: its will goes out
	time.Sleep(300 * time.Millisecond)
	cam := dialCounting(t, addr, "cam-1", "cam-1", "cam-1", nil)
	pub(cam, "things/cam-1/data/image", `{"img":1}`)
	time.Sleep(300 * time.Millisecond)
	if n := doctorLive.n.Load(); n != 0 {
		t.Fatalf("live, with the hub's will private:true, the doctor got %d images", n)
	}
	pub(dialCounting(t, addr, "hub-1", "hub-1", "hub-1", nil), "things/hub-1/data/ctl", `{"private":false}`) // back, not private

	doctor := newAsker(t, addr, "doctor-h", "doctor")
	doctor.topic = "things/cam-1/data/image"
	var got []string
	for _, p := range doctor.ask(`{"from":"`+start.Add(-time.Minute).UTC().Format(time.RFC3339Nano)+`"}`, "") {
		if !p.OK {
			t.Fatalf("refused: %s", p.Error)
		}
		for _, r := range p.Readings {
			got = append(got, string(r.Data))
		}
	}
	if len(got) != 0 {
		t.Errorf("history released %v, withheld live (taken while the hub's will said private:true)", got)
	}
}
