package broker_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/ferretdb"
	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/broker"
)

// startOwn starts a broker of the test's own on dataDir (embedded FerretDB
// unless mongoURI is set) with the household bootstrap and the wall clock.
func startOwn(t *testing.T, dataDir, mongoURI string) *broker.Broker {
	t.Helper()
	cfg := broker.Defaults()
	cfg.MongoURI = mongoURI
	return startConfigured(t, dataDir, cfg)
}

// TestConfigSurvivesRestart: after a restart every stored configuration is
// in force and retained again — rebuilt from MongoDB, not from the broker's
// own state store: a policy removed from MongoDB while the broker was down
// is not served.
func TestConfigSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	until := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	b := startOwn(t, dir, "")
	addr := b.Addr("mqtt")
	an := mustCfg(t, addr, "an", "an-pass")
	peter := mustCfg(t, addr, "peter", "peter-pass")
	pol := func(id string) string {
		return `{"id":"` + id + `","priority":50,"effect":"allow","subjects":["user:ruth"],"resources":["things/thermo-1/data/humidity"],"actions":["read"]}`
	}
	an.mustOK("$config/users/an/policies/restart-kept", pol("restart-kept"))
	an.mustOK("$config/users/an/policies/restart-gone", pol("restart-gone"))
	inv := an.mustOK("$config/things/watch-1/relations/peter", `{"relation":"co_owner"}`).Inv
	peter.mustOK("$config/invitations/peter/"+inv+"/answer", `{"accept":true}`)
	pending := an.mustOK("$config/things/thermo-1/relations/ruth", `{"relation":"visitor","valid_until":"`+until+`"}`).Inv
	b.Close()

	// While Veil is down, the policy is removed from MongoDB.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fdb, err := ferretdb.Start(ctx, dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	st, err := mongo.Open(ctx, fdb.URI(), "veil")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeletePolicy(ctx, "an", "restart-gone"); err != nil {
		t.Fatal(err)
	}
	_ = st.Close(ctx)
	_ = fdb.Close()

	b = startOwn(t, dir, "")
	defer b.Close()
	addr = b.Addr("mqtt")
	an = mustCfg(t, addr, "an", "an-pass")
	an.subscribe("$config/users/an/#", "$config/things/watch-1", "$config/things/watch-1/#", "$config/things/thermo-1/#")
	got := an.collect(1500 * time.Millisecond)
	for _, want := range []string{
		"$config/users/an/policies/restart-kept", "$config/users/an/policies/doctor-thermo", "$config/things/watch-1",
		"$config/things/watch-1/relations/peter", "$config/things/thermo-1/relations/ruth",
	} {
		if _, ok := got[want]; !ok {
			t.Fatalf("after the restart %s is not retained; got %v", want, keys(got))
		}
	}
	if _, ok := got["$config/users/an/policies/restart-gone"]; ok {
		t.Fatal("a policy deleted from MongoDB is still served after the restart")
	}
	if peter := got["$config/things/watch-1/relations/peter"]; !strings.Contains(peter, `"status":"active","valid_from":"`) ||
		!strings.Contains(peter, `"invitation":"`+inv+`","invited_by":"an"`) ||
		!strings.Contains(got["$config/things/thermo-1/relations/ruth"], `"status":"pending"`) {
		t.Fatalf("relations after the restart: %v", got)
	}
	ruth := mustCfg(t, addr, "ruth", "ruth-pass")
	ruth.subscribe("$config/invitations/ruth/#")
	if _, ok := ruth.waitFor("$config/invitations/ruth/"+pending, 3*time.Second); !ok {
		t.Fatal("Ruth's pending invitation is not retained after the restart")
	}
	// And in force: Peter, co-owner of watch-1, reads it raw; Ruth may still accept.
	peter = mustCfg(t, addr, "peter", "peter-pass")
	peter.subscribe("things/watch-1/data/heart_rate")
	w, err := dialCfg(t, addr, "", "watch-1", "watch-1-secret", "watch-1")
	if err != nil {
		t.Fatal(err)
	}
	if code := w.publish("things/watch-1/data/heart_rate", `{"bpm":61}`); code != 0 {
		t.Fatalf("watch-1 publish: 0x%02x", code)
	}
	if m, ok := peter.waitFor("things/watch-1/data/heart_rate", 5*time.Second); !ok || string(m.Payload) != `{"bpm":61}` {
		t.Fatalf("co-owner after the restart: %v", m)
	}
	ruth.mustOK("$config/invitations/ruth/"+pending+"/answer", `{"accept":true}`)

	// The bootstrap file's pending hand-over of lock-2 became an invitation
	// An can answer over MQTT; accepting it ends Patrick's access.
	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	if code := patrick.publish("things/lock-2/cmd/unlock", `{}`); code != 0 {
		t.Fatalf("installer before hand-over: 0x%02x", code)
	}
	lock2 := an.invitationTo("lock-2")
	an.mustOK("$config/invitations/an/"+lock2+"/answer", `{"accept":true}`)
	if code := patrick.publish("things/lock-2/cmd/unlock", `{}`); code != 0x87 {
		t.Fatalf("installer after hand-over: 0x%02x, want 0x87", code)
	}

	// Place relations hold for the things in the place: Peter (co-owner of
	// home-an) lets the stranger into the home for a while; An revokes it.
	stranger := mustCfg(t, addr, "stranger", "stranger-pass")
	if code := stranger.publish("things/lock-1/cmd/unlock", `{}`); code != 0x87 {
		t.Fatalf("stranger before the invitation: 0x%02x", code)
	}
	inv = peter.mustOK("$config/places/home-an/relations/stranger", `{"relation":"visitor","valid_until":"`+until+`"}`).Inv
	stranger.mustOK("$config/invitations/stranger/"+inv+"/answer", `{"accept":true}`)
	if code := stranger.publish("things/lock-1/cmd/unlock", `{}`); code != 0 {
		t.Fatalf("place visitor's unlock: 0x%02x", code)
	}
	stranger.mustRefuse("$config/places/home-an/relations/ruth", `{"relation":"visitor","valid_until":"`+until+`"}`, "not authorized")
	an.mustOK("$config/places/home-an/relations/stranger", ``)
	if code := stranger.publish("things/lock-1/cmd/unlock", `{}`); code != 0x87 {
		t.Fatalf("revoked place visitor's unlock: 0x%02x", code)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// proxy forwards TCP to a target and can be cut off, like a network
// partition between Veil and MongoDB.
type proxy struct {
	mu     sync.Mutex
	addr   string
	target string
	ln     net.Listener
	conns  map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.down)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			target := p.target
			p.mu.Unlock()
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

// down closes the listener and every forwarded connection.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// up listens again on the same address, forwarding to target.
func (p *proxy) up(t *testing.T, target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

func hostOf(uri string) string {
	s := strings.TrimPrefix(uri, "mongodb://")
	h, _, _ := strings.Cut(s, "/")
	return h
}

// TestConfigRefusedWhileMetadataStoreDown: with MongoDB (here FerretDB,
// stopped) unreachable, config publishes are refused with "metadata store
// unavailable" and nothing is half-applied — the old policy stays in force
// and retained — while enforcement goes on; when it is back, config is
// accepted again.
func TestConfigRefusedWhileMetadataStoreDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fdir := t.TempDir()
	fdb, err := ferretdb.Start(ctx, fdir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, hostOf(fdb.URI()))
	b := startOwn(t, t.TempDir(), "mongodb://"+px.addr+"/")
	defer b.Close()
	addr := b.Addr("mqtt")
	an := mustCfg(t, addr, "an", "an-pass")
	doc := connect311Free(t, addr)
	thermo, err := dialCfg(t, addr, "", "thermo-1", "thermo-1-secret", "thermo-1")
	if err != nil {
		t.Fatal(err)
	}

	// The store goes away: the connection is cut and FerretDB stops.
	px.down()
	if err := fdb.Close(); err != nil {
		t.Fatal(err)
	}
	topic := "$config/users/an/policies/doctor-thermo"
	changed := `{"id":"doctor-thermo","priority":10,"effect":"allow","subjects":["role:doctor"],
		"resources":["things/thermo-1/data/temperature"],"actions":["read"],"constraints":[{"kind":"accuracy","field":"temperature","step":5}]}`
	start := time.Now()
	r := an.ask(topic, changed)
	if r.OK || r.Error != "metadata store unavailable" {
		t.Fatalf("config publish with the store down: %+v", r)
	}
	t.Logf("refused after %s", time.Since(start).Round(time.Millisecond))
	an.mustRefuse("$config/things/thermo-1/relations/ruth", `{"relation":"visitor","valid_until":"2099-01-01T00:00:00Z"}`, "metadata store unavailable")

	// Enforcement goes on with the last accepted state: the doctor still
	// gets 0.1 steps, and the old policy is what is retained.
	thermoPub(t, thermo, `{"temperature":21.37}`)
	if m, ok := doc.waitFor("things/thermo-1/data/temperature", 5*time.Second); !ok || string(m.Payload) != `{"temperature":21.4}` {
		t.Fatalf("doctor during the outage: %v", m)
	}
	an.subscribe(topic)
	if m, ok := an.waitFor(topic, 5*time.Second); !ok || !strings.Contains(string(m.Payload), `"step":0.1`) {
		t.Fatalf("retained policy during the outage: %v", m)
	}
	an.subscribe("$config/things/thermo-1/relations/ruth")
	if m, ok := an.waitFor("$config/things/thermo-1/relations/ruth", quiet); ok {
		t.Fatalf("a refused invitation is retained: %s", m.Payload)
	}

	// The store comes back (same files, a new FerretDB): config is accepted again.
	fdb, err = ferretdb.Start(ctx, fdir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer fdb.Close()
	px.up(t, hostOf(fdb.URI()))
	deadline := time.Now().Add(45 * time.Second)
	for {
		r = an.ask(topic, changed)
		if r.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("config still refused after the store came back: %+v", r)
		}
		time.Sleep(500 * time.Millisecond)
	}
	thermoPub(t, thermo, `{"temperature":21.37}`)
	for {
		m, ok := doc.waitFor("things/thermo-1/data/temperature", 5*time.Second)
		if !ok {
			t.Fatal("doctor got nothing after the change")
		}
		if string(m.Payload) == `{"temperature":20}` {
			break
		}
	}
}

// connect311Free is the doctor subscribed to thermo-1's temperature.
func connect311Free(t *testing.T, addr string) *cfgClient {
	d := mustCfg(t, addr, "doctor", "doctor-pass")
	if codes := d.subscribe("things/thermo-1/data/temperature"); codes[0] > 2 {
		t.Fatalf("doctor's subscription refused: % x", codes)
	}
	return d
}

func thermoPub(t *testing.T, c *cfgClient, payload string) {
	t.Helper()
	if code := c.publish("things/thermo-1/data/temperature", payload); code != 0 {
		t.Fatalf("thermo-1 publish: 0x%02x", code)
	}
}
