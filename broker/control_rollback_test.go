package broker_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/ferretdb"
	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/broker"
)

// stallProxy forwards to upstream; once armed, the first client message
// containing marker is held (never forwarded) for hold, then its connection
// is closed: the store operation runs into its deadline.
type stallProxy struct {
	ln     net.Listener
	up     string
	marker []byte
	hold   time.Duration
	armed  atomic.Bool
	fired  atomic.Bool
	skip   atomic.Int32 // matches to let through first
}

func newStallProxy(t *testing.T, upstream string, marker string, hold time.Duration) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, up: upstream, marker: []byte(marker), hold: hold}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return p
}

func (p *stallProxy) serve(c net.Conn) {
	u, err := net.Dial("tcp", p.up)
	if err != nil {
		c.Close()
		return
	}
	go func() { _, _ = io.Copy(c, u); c.Close() }()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if p.armed.Load() && bytes.Contains(buf[:n], p.marker) && p.skip.Add(-1) < 0 && p.fired.CompareAndSwap(false, true) {
				time.Sleep(p.hold)
				c.Close()
				u.Close()
				return
			}
			if _, werr := u.Write(buf[:n]); werr != nil {
				c.Close()
				return
			}
		}
		if err != nil {
			u.Close()
			return
		}
	}
}

// TestRefusedAcceptanceLeavesTheStoreAsItWas: an acceptance whose store
// write runs into its deadline is refused, and its earlier writes are
// undone on a context of their own (the change's is the one that ran out):
// the invitation is pending again, no owner of record is set, and the
// invitee may answer again.
func TestRefusedAcceptanceLeavesTheStoreAsItWas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := ferretFor(ctx, t)
	// BSON of a delete command's first element: {delete: "relationships"}.
	px := newStallProxy(t, hostOf(store), "\x02delete\x00", 3500*time.Millisecond)
	cfg := broker.Defaults()
	cfg.MongoURI = through(t, store, px.ln.Addr().String())
	b := startConfigured(t, t.TempDir(), cfg)
	defer b.Close()
	addr := b.Addr("mqtt")
	an := mustCfg(t, addr, "an", "an-pass")
	inv := an.invitationTo("lock-2")
	// The hand-over writes the invitation, the relation, the thing, then
	// deletes Patrick's installer relation: that delete runs into the deadline.
	px.armed.Store(true)
	r := an.ask("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	if r.OK || !px.fired.Load() {
		t.Fatalf("the acceptance was not refused by the stalled delete: %+v (fired %v)", r, px.fired.Load())
	}
	st, err := mongo.Open(ctx, store, "veil")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(context.Background())
	got, _, err := st.Invitation(ctx, inv)
	if err != nil {
		t.Fatal(err)
	}
	snap, _, _ := st.Load(ctx)
	var owner string
	for _, th := range snap.Things {
		if th.ID == "lock-2" {
			owner = th.Owner
		}
	}
	if got.Status != "pending" || owner != "" {
		r2 := an.ask("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
		t.Errorf("a refused acceptance left the store changed: invitation %q, lock-2 owner of record %q (engine: %v); accepting again: %+v",
			got.Status, owner, b.Engine.Relationships("lock-2", ""), r2)
	}
}

// TestRefusedRevocationLeavesTheStoreAsItWas: the relations a refused
// revocation deleted before the one that ran into the deadline are put
// back, so the store and the engine agree (else a restart would drop it).
func TestRefusedRevocationLeavesTheStoreAsItWas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := ferretFor(ctx, t)
	px := newStallProxy(t, hostOf(store), "\x02delete\x00", 3500*time.Millisecond)
	cfg := broker.Defaults()
	cfg.MongoURI = through(t, store, px.ln.Addr().String())
	b := startConfigured(t, t.TempDir(), cfg)
	defer b.Close()
	addr := b.Addr("mqtt")
	an := mustCfg(t, addr, "an", "an-pass")
	// Ruth: active visitor of lock-1 (the file) plus a pending co-owner invitation.
	an.mustOK("$config/things/lock-1/relations/ruth", `{"relation":"co_owner"}`)
	if n := len(b.Engine.Relationships("lock-1", "")); n < 2 {
		t.Fatalf("relations on lock-1: %v", b.Engine.Relationships("lock-1", ""))
	}
	px.skip.Store(1)
	px.armed.Store(true)
	r := an.ask("$config/things/lock-1/relations/ruth", ``)
	if r.OK || !px.fired.Load() {
		t.Fatalf("the revocation was not refused by the stalled delete: %+v", r)
	}
	st, err := mongo.Open(ctx, store, "veil")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(context.Background())
	snap, _, _ := st.Load(ctx)
	var stored []string
	for _, x := range snap.Relationships {
		if x.Thing == "lock-1" && x.User == "ruth" {
			stored = append(stored, string(x.Relation))
		}
	}
	var engine []string
	for _, x := range b.Engine.Relationships("lock-1", "") {
		if x.User == "ruth" {
			engine = append(engine, string(x.Relation))
		}
	}
	if len(stored) != len(engine) {
		t.Errorf("a refused revocation left the store and the engine apart: stored %v, engine %v", stored, engine)
	}
}

// TestRefusedInvitationIsRevoked: an invitation whose write fails — the
// relation's write stalls past its deadline, or the invitation's write
// lands with its reply lost — is refused, and revoked on a context of its
// own (the change's is the one that ran out): left pending, the invitee
// could accept it.
func TestRefusedInvitationIsRevoked(t *testing.T) {
	for _, c := range []struct {
		name  string
		proxy func(t *testing.T, host string) (addr string, arm func(), fired func() bool)
	}{
		{"relation write stalled", func(t *testing.T, host string) (string, func(), func() bool) {
			// {update: "relationships"}: PutRelationship's upsert.
			px := newStallProxy(t, host, "\x02update\x00\x0e\x00\x00\x00relationships\x00", 3500*time.Millisecond)
			return px.ln.Addr().String(), func() { px.armed.Store(true) }, px.fired.Load
		}},
		{"invitation written, reply lost", func(t *testing.T, host string) (string, func(), func() bool) {
			// {update: "invitations"}: PutInvitation's upsert.
			px := newLostReplyProxy(t, host, "\x02update\x00\x0c\x00\x00\x00invitations\x00")
			return px.ln.Addr().String(), func() { px.armed.Store(true) }, px.fired.Load
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			store := ferretFor(ctx, t)
			addr, arm, fired := c.proxy(t, hostOf(store))
			cfg := broker.Defaults()
			cfg.MongoURI = through(t, store, addr)
			b := startConfigured(t, t.TempDir(), cfg)
			defer b.Close()
			an := mustCfg(t, b.Addr("mqtt"), "an", "an-pass")
			stranger := mustCfg(t, b.Addr("mqtt"), "stranger", "stranger-pass")

			arm()
			r := an.ask("$config/things/lock-1/relations/stranger", `{"relation":"co_owner"}`)
			if r.OK || !fired() {
				t.Fatalf("the invitation was not refused: %+v (fault fired %v)", r, fired())
			}
			st, err := mongo.Open(ctx, store, "veil")
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close(context.Background())
			invs, err := st.Invitations(ctx, "pending")
			if err != nil {
				t.Fatal(err)
			}
			for _, inv := range invs {
				if inv.Invitee == "stranger" && inv.Thing == "lock-1" {
					r2 := stranger.ask("$config/invitations/stranger/"+inv.ID+"/answer", `{"accept":true}`)
					t.Errorf("an invitation refused to the inviter (%s) stays pending (%s); the invitee accepting it: ok=%v %s; stranger's relations on lock-1: %v",
						r.Error, inv.ID, r2.OK, r2.Error, b.Engine.Relationships("lock-1", ""))
				}
			}
		})
	}
}

// lostReplyProxy forwards every message; once armed, the first one holding
// marker reaches the store, but its reply never reaches the broker (the
// connection drops): the write is done, the broker sees it fail.
type lostReplyProxy struct {
	ln     net.Listener
	up     string
	marker []byte
	armed  atomic.Bool
	fired  atomic.Bool
}

func newLostReplyProxy(t *testing.T, upstream, marker string) *lostReplyProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lostReplyProxy{ln: ln, up: upstream, marker: []byte(marker)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return p
}

func (p *lostReplyProxy) serve(c net.Conn) {
	u, err := net.Dial("tcp", p.up)
	if err != nil {
		c.Close()
		return
	}
	var drop atomic.Bool
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := u.Read(buf)
			if n > 0 && !drop.Load() {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			hit := p.armed.Load() && bytes.Contains(buf[:n], p.marker) && p.fired.CompareAndSwap(false, true)
			if hit {
				drop.Store(true)
			}
			if _, werr := u.Write(buf[:n]); werr != nil {
				c.Close()
				return
			}
			if hit {
				time.Sleep(500 * time.Millisecond) // the store does the write
				c.Close()
				u.Close()
				return
			}
		}
		if err != nil {
			u.Close()
			return
		}
	}
}

// TestRefusedInvitationLeavesNoPendingRelation: an invitation whose
// relation write landed but whose reply was lost is refused, and the
// relation is taken back too: left pending without its invitation, the
// next start would offer it again from no inviter, unchecked.
func TestRefusedInvitationLeavesNoPendingRelation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	store := ferretFor(ctx, t)
	px := newLostReplyProxy(t, hostOf(store), "\x02update\x00\x0e\x00\x00\x00relationships\x00") // PutRelationship's upsert
	cfg := broker.Defaults()
	cfg.MongoURI = through(t, store, px.ln.Addr().String())
	dir := t.TempDir()
	b := startConfigured(t, dir, cfg)
	an := mustCfg(t, b.Addr("mqtt"), "an", "an-pass")
	px.armed.Store(true)
	r := an.ask("$config/things/lock-1/relations/stranger", `{"relation":"co_owner"}`)
	if r.OK || !px.fired.Load() {
		t.Fatalf("the invitation was not refused by the lost reply: %+v (fired %v)", r, px.fired.Load())
	}
	b.Close()

	cfg.MongoURI = store
	b = startConfigured(t, dir, cfg)
	defer b.Close()
	for _, x := range b.Engine.Relationships("lock-1", "") {
		if x.User == "stranger" {
			t.Fatalf("after a restart the refused invitation's relation is there: %+v", x)
		}
	}
	invs, err := b.Store.Invitations(ctx, "pending")
	if err != nil {
		t.Fatal(err)
	}
	for _, inv := range invs {
		if inv.Invitee == "stranger" {
			t.Fatalf("after a restart the refused invitation is offered again: %+v", inv)
		}
	}
}

// ferretFor starts an embedded FerretDB for one test and returns its URI.
func ferretFor(ctx context.Context, t *testing.T) string {
	t.Helper()
	fdb, err := ferretdb.Start(ctx, t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fdb.Close() })
	return fdb.URI()
}

// through is uri with its host replaced by proxy's address.
func through(t *testing.T, uri, proxy string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = proxy
	return u.String()
}
