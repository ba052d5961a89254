package mongo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/veil-iot/veil/adapters/ferretdb"
	"github.com/veil-iot/veil/policies"
)

// testURI is the embedded FerretDB every test in this package talks to;
// each test uses a database of its own.
var testURI string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "veil-mongo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv, err := ferretdb.Start(context.Background(), dir, zerolog.New(os.Stderr).Level(zerolog.WarnLevel))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	testURI = srv.URI()
	return m.Run()
}

func open(t testing.TB) *Store {
	t.Helper()
	ctx := context.Background()
	db := "t_" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	st, err := Open(ctx, testURI, db)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		_ = st.Database().Drop(context.Background())
		_ = st.Close(context.Background())
	})
	return st
}

func mustPolicy(t *testing.T, doc string) policies.Policy {
	t.Helper()
	p, err := policies.ParsePolicy([]byte(doc))
	if err != nil {
		t.Fatalf("ParsePolicy: %v\n%s", err, doc)
	}
	return p
}

const nestedPolicy = `{
  "id": "doctor-location",
  "description": "Doctors see my location to about 1 km; precisely when my heart rate is above 140",
  "priority": 10,
  "effect": "allow",
  "subjects": ["role:doctor", "user:ruth", "org:acme#member"],
  "resources": ["things/watch-1/data/location", "stream:heart_rate"],
  "actions": ["read", "history"],
  "purposes": ["diagnosis"],
  "when": {"all": [
    {"attr": "env.hour", "op": "between", "value": [8, 18]},
    {"any": [
      {"attr": "requester.org", "op": "in", "value": ["acme", "clinic"]},
      {"not": {"attr": "requester.certified_installer", "op": "eq", "value": true}},
      {"attr": "data.watch-1.heart_rate.bpm", "op": "gt", "value": 140.25}
    ]},
    {"attr": "requester.org", "op": "eq", "ref": "thing.org"}
  ]},
  "constraints": [
    {"kind": "accuracy", "field": "lat", "step": 0.01},
    {"kind": "accuracy", "field": "lon", "step": 0.01},
    {"kind": "geo", "lat": "lat", "lon": "lon", "meters": 1000},
    {"kind": "range", "field": "bpm", "min": -0.5, "max": 220},
    {"kind": "fields", "drop": ["raw", "debug"]},
    {"kind": "pseudonymize", "field": "patient"},
    {"kind": "rate", "seconds": 2.5}
  ]
}`

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// fixture is one of everything.
type fixture struct {
	users  []policies.User
	things []policies.Thing
	places []policies.Place
	rels   []policies.Relationship
	mems   []policies.Membership
	pols   []policies.OwnedPolicy
	creds  Credentials
}

func newFixture(t *testing.T) fixture {
	return fixture{
		users: []policies.User{
			{Name: "admin", Admin: true},
			{Name: "an", Attributes: policies.Attributes{"org": "home", "age": 41.0}},
			{Name: "patrick", Attributes: policies.Attributes{"certified_installer": true}},
			{Name: "ruth"},
		},
		things: []policies.Thing{
			{ID: "lock-1", Owner: "an", Kind: "actuator", Place: "home-an"},
			{ID: "watch-1", Owner: "an", Kind: "sensor", Streams: []string{"location", "heart_rate"},
				Attributes: policies.Attributes{"model": "w2", "battery": 0.75, "wrist": true}},
		},
		places: []policies.Place{
			{ID: "home-an", Owner: "an", Attributes: policies.Attributes{"city": "Stuttgart"}},
			{ID: "kitchen", Owner: "an", Parent: "home-an"},
		},
		rels: []policies.Relationship{
			{Place: "home-an", User: "peter", Relation: policies.RelCoOwner, Status: policies.StatusActive},
			{Thing: "lock-1", User: "patrick", Relation: policies.RelInstaller, Status: policies.StatusActive},
			{Thing: "lock-1", User: "ruth", Relation: policies.RelVisitor, Status: policies.StatusPending,
				ValidFrom: at("2026-01-01T18:00:00.123456789Z"), ValidUntil: at("2026-12-31T23:00:00.000000001Z")},
		},
		mems: []policies.Membership{
			{Group: "org:acme", Relation: "member", Member: "team:night#member"},
			{Group: "org:acme", Relation: "member", Member: "user:ruth"},
		},
		pols: []policies.OwnedPolicy{
			{Owner: "an", Policy: mustPolicy(t, nestedPolicy)},
			{Owner: "an", Policy: mustPolicy(t, `{"id":"zz-deny","priority":-3,"effect":"deny","subjects":["*"],"resources":["things/+/data/#"],"actions":["read"]}`)},
			{Owner: "peter", Policy: mustPolicy(t, `{"id":"keep","priority":0,"effect":"allow","subjects":["thing:thermostat-2"],"resources":["stream:temperature"],"actions":["read"],"constraints":[{"kind":"fields","keep":["temperature"]}]}`)},
		},
		creds: Credentials{
			"user:an":       "$argon2id$v=19$m=65536,t=1,p=2$c2FsdA$aGFzaA",
			"user:admin":    "$argon2id$v=19$m=65536,t=1,p=2$c2FsdDI$aGFzaDI",
			"thing:watch-1": "$argon2id$v=19$m=65536,t=1,p=2$c2FsdDM$aGFzaDM",
		},
	}
}

func (f fixture) write(t *testing.T, st *Store) {
	t.Helper()
	ctx := context.Background()
	for _, u := range f.users {
		if err := st.PutUser(ctx, u, f.creds["user:"+u.Name]); err != nil {
			t.Fatal(err)
		}
	}
	for _, th := range f.things {
		if err := st.PutThing(ctx, th, f.creds["thing:"+th.ID]); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range f.places {
		if err := st.PutPlace(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range f.rels {
		if err := st.PutRelationship(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range f.mems {
		if err := st.PutMembership(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range f.pols {
		if err := st.PutPolicy(ctx, p.Owner, p.Policy); err != nil {
			t.Fatal(err)
		}
	}
}

func (f fixture) snapshot() policies.Snapshot {
	return policies.Snapshot{Users: f.users, Things: f.things, Places: f.places, Relationships: f.rels, Memberships: f.mems, Policies: f.pols}
}

func load(t *testing.T, st *Store) (policies.Snapshot, Credentials) {
	t.Helper()
	snap, creds, err := st.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return snap, creds
}

func diff(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("mismatch\n got %#v\nwant %#v", got, want)
	}
}

func TestRoundTripEveryType(t *testing.T) {
	t.Parallel()
	st := open(t)
	f := newFixture(t)
	f.write(t, st)
	snap, creds := load(t, st)
	diff(t, snap.Users, f.users)
	diff(t, snap.Things, f.things)
	diff(t, snap.Places, f.places)
	diff(t, snap.Relationships, f.rels)
	diff(t, snap.Memberships, f.mems)
	diff(t, snap.Policies, f.pols)
	diff(t, creds, f.creds)
	// The nested policy is exactly what ParsePolicy produced, and its
	// canonical form still parses to the same value.
	diff(t, snap.Policies[0].Policy, mustPolicy(t, nestedPolicy))

	got, err := st.Policies(context.Background(), "an")
	if err != nil {
		t.Fatal(err)
	}
	diff(t, got, []policies.Policy{f.pols[0].Policy, f.pols[1].Policy})
	if got, _ := st.Policies(context.Background(), "nobody"); len(got) != 0 {
		t.Fatalf("policies of nobody: %v", got)
	}

	h, err := st.PasswordHash(context.Background(), "an")
	if err != nil || h != f.creds["user:an"] {
		t.Fatalf("PasswordHash = %q, %v", h, err)
	}
	if h, err := st.PasswordHash(context.Background(), "ruth"); err != nil || h != "" {
		t.Fatalf("PasswordHash(ruth) = %q, %v", h, err)
	}
	if h, err := st.PasswordHash(context.Background(), "ghost"); err != nil || h != "" {
		t.Fatalf("PasswordHash(ghost) = %q, %v", h, err)
	}
	if h, err := st.SecretHash(context.Background(), "watch-1"); err != nil || h != f.creds["thing:watch-1"] {
		t.Fatalf("SecretHash = %q, %v", h, err)
	}

	// The engine accepts the loaded snapshot.
	if err := policies.NewEngine(policies.Options{}).Load(snap); err != nil {
		t.Fatalf("engine rejects the loaded snapshot: %v", err)
	}
}

func TestTimesKeepNanosecondsAndInstant(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	zone := time.FixedZone("CEST", 2*3600)
	from := time.Date(2026, 6, 1, 18, 0, 0, 1, zone)
	until := time.Date(2262, 4, 11, 23, 47, 16, 854775807, time.UTC).Add(365 * 24 * time.Hour) // beyond int64 ns
	r := policies.Relationship{Thing: "lock-1", User: "ruth", Relation: policies.RelVisitor, Status: policies.StatusActive, ValidFrom: from, ValidUntil: until}
	if err := st.PutRelationship(ctx, r); err != nil {
		t.Fatal(err)
	}
	snap, _ := load(t, st)
	got := snap.Relationships[0]
	if !got.ValidFrom.Equal(from) || !got.ValidUntil.Equal(until) {
		t.Fatalf("window %v..%v, want %v..%v", got.ValidFrom, got.ValidUntil, from, until)
	}
	if got.ValidFrom.Location() != time.UTC {
		t.Fatalf("times should come back in UTC, got %v", got.ValidFrom.Location())
	}
	var raw bson.M
	if err := st.rels.FindOne(ctx, bson.D{}).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	if raw["valid_from"] != "2026-06-01T16:00:00.000000001Z" {
		t.Fatalf("stored valid_from %v", raw["valid_from"])
	}
}

func TestUpsertSemantics(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	f := newFixture(t)
	f.write(t, st)

	// A user put again replaces attributes and admin; an empty hash keeps it.
	if err := st.PutUser(ctx, policies.User{Name: "an", Attributes: policies.Attributes{"role": "owner"}}, ""); err != nil {
		t.Fatal(err)
	}
	// Attributes are normalised (int → float64), dropping them unsets them.
	if err := st.PutUser(ctx, policies.User{Name: "admin", Attributes: policies.Attributes{"level": 3}}, "$argon2id$new"); err != nil {
		t.Fatal(err)
	}
	if err := st.PutUser(ctx, policies.User{Name: "patrick"}, ""); err != nil {
		t.Fatal(err)
	}
	// A thing put again loses its place and gets streams; its hash stays.
	if err := st.PutThing(ctx, policies.Thing{ID: "watch-1", Owner: "an", Kind: "sensor", Streams: []string{"location"}}, ""); err != nil {
		t.Fatal(err)
	}
	if err := st.PutThing(ctx, policies.Thing{ID: "lock-1", Owner: "peter", Kind: "actuator"}, "$argon2id$lock"); err != nil {
		t.Fatal(err)
	}
	if err := st.PutPlace(ctx, policies.Place{ID: "kitchen", Owner: "peter"}); err != nil {
		t.Fatal(err)
	}
	// The visitor accepts: status active, window removed. Same key → same row.
	if err := st.PutRelationship(ctx, policies.Relationship{Thing: "lock-1", User: "ruth", Relation: policies.RelVisitor, Status: policies.StatusActive}); err != nil {
		t.Fatal(err)
	}
	// A second relation of the same user on the same object is another row.
	if err := st.PutRelationship(ctx, policies.Relationship{Thing: "lock-1", User: "ruth", Relation: policies.RelCoOwner, Status: policies.StatusPending}); err != nil {
		t.Fatal(err)
	}
	// The same user and relation on a place is a different object.
	if err := st.PutRelationship(ctx, policies.Relationship{Place: "lock-1", User: "ruth", Relation: policies.RelVisitor, Status: policies.StatusActive}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutMembership(ctx, f.mems[1]); err != nil {
		t.Fatal(err)
	}
	changed := mustPolicy(t, `{"id":"zz-deny","priority":7,"effect":"allow","subjects":["relation:visitor"],"resources":["things/lock-1/state"],"actions":["read"]}`)
	if err := st.PutPolicy(ctx, "an", changed); err != nil {
		t.Fatal(err)
	}

	snap, creds := load(t, st)
	diff(t, snap.Users, []policies.User{
		{Name: "admin", Attributes: policies.Attributes{"level": 3.0}},
		{Name: "an", Attributes: policies.Attributes{"role": "owner"}},
		{Name: "patrick"},
		{Name: "ruth"},
	})
	diff(t, snap.Things, []policies.Thing{
		{ID: "lock-1", Owner: "peter", Kind: "actuator"},
		{ID: "watch-1", Owner: "an", Kind: "sensor", Streams: []string{"location"}},
	})
	diff(t, snap.Places, []policies.Place{f.places[0], {ID: "kitchen", Owner: "peter"}})
	diff(t, snap.Relationships, []policies.Relationship{ // ordered by object, user, relation
		{Place: "home-an", User: "peter", Relation: policies.RelCoOwner, Status: policies.StatusActive},
		{Place: "lock-1", User: "ruth", Relation: policies.RelVisitor, Status: policies.StatusActive},
		{Thing: "lock-1", User: "patrick", Relation: policies.RelInstaller, Status: policies.StatusActive},
		{Thing: "lock-1", User: "ruth", Relation: policies.RelCoOwner, Status: policies.StatusPending},
		{Thing: "lock-1", User: "ruth", Relation: policies.RelVisitor, Status: policies.StatusActive},
	})
	diff(t, snap.Memberships, f.mems)
	diff(t, snap.Policies, []policies.OwnedPolicy{f.pols[0], {Owner: "an", Policy: changed}, f.pols[2]})
	diff(t, creds, Credentials{
		"user:an":       f.creds["user:an"],
		"user:admin":    "$argon2id$new",
		"thing:watch-1": f.creds["thing:watch-1"],
		"thing:lock-1":  "$argon2id$lock",
	})

	// Puts reject what the engine would reject, and write nothing.
	if err := st.PutUser(ctx, policies.User{Name: "x", Attributes: policies.Attributes{"bad": []string{"a"}}}, ""); err == nil {
		t.Fatal("PutUser accepted a list attribute")
	}
	if err := st.PutRelationship(ctx, policies.Relationship{Thing: "lock-1", User: "x", Relation: "friend", Status: policies.StatusActive}); err == nil {
		t.Fatal("PutRelationship accepted an unknown relation")
	}
	if err := st.PutUser(ctx, policies.User{}, ""); err == nil {
		t.Fatal("PutUser accepted an empty name")
	}
	snap2, _ := load(t, st)
	diff(t, snap2, snap)
}

func TestDelete(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	f := newFixture(t)
	f.write(t, st)

	steps := []struct {
		name string
		del  func() error
	}{
		{"user", func() error { return st.DeleteUser(ctx, "an") }},
		{"thing", func() error { return st.DeleteThing(ctx, "watch-1") }},
		{"place", func() error { return st.DeletePlace(ctx, "kitchen") }},
		{"thing relationship", func() error { return st.DeleteRelationship(ctx, "lock-1", "", "ruth", policies.RelVisitor) }},
		{"place relationship", func() error { return st.DeleteRelationship(ctx, "", "home-an", "peter", policies.RelCoOwner) }},
		{"membership", func() error { return st.DeleteMembership(ctx, f.mems[0]) }},
		{"policy", func() error { return st.DeletePolicy(ctx, "an", "doctor-location") }},
	}
	for _, s := range steps {
		if err := s.del(); err != nil {
			t.Fatalf("delete %s: %v", s.name, err)
		}
		if err := s.del(); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete %s: %v, want ErrNotFound", s.name, err)
		}
	}
	if err := st.DeleteRelationship(ctx, "lock-1", "home-an", "ruth", policies.RelVisitor); err == nil {
		t.Fatal("DeleteRelationship with thing and place succeeded")
	}
	// The installer relation on lock-1 is not the visitor one: still there.
	snap, creds := load(t, st)
	wantUsers := []policies.User{f.users[0], f.users[2], f.users[3]}
	diff(t, snap.Users, wantUsers)
	diff(t, snap.Things, f.things[:1])
	diff(t, snap.Places, f.places[:1])
	diff(t, snap.Relationships, []policies.Relationship{f.rels[1]})
	diff(t, snap.Memberships, f.mems[1:])
	diff(t, snap.Policies, f.pols[1:])
	// A deleted user or thing takes its hash along.
	diff(t, creds, Credentials{"user:admin": f.creds["user:admin"]})
}

func TestEmptyStoreLoads(t *testing.T) {
	t.Parallel()
	st := open(t)
	snap, creds := load(t, st)
	diff(t, snap, policies.Snapshot{})
	diff(t, creds, Credentials{})
	if err := st.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestUniqueIndexes(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	// Opening again (a restart) finds the indexes in place.
	st2, err := Open(ctx, testURI, st.Database().Name())
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer st2.Close(ctx)

	for _, c := range []struct {
		coll *mongo.Collection
		doc  bson.D
	}{
		{st.rels, bson.D{{Key: "object", Value: "thing:lock-1"}, {Key: "thing", Value: "lock-1"}, {Key: "user", Value: "ruth"}, {Key: "relation", Value: "visitor"}, {Key: "status", Value: "active"}}},
		{st.members, bson.D{{Key: "group", Value: "org:acme"}, {Key: "relation", Value: "member"}, {Key: "member", Value: "user:ruth"}}},
		{st.pols, bson.D{{Key: "owner", Value: "an"}, {Key: "id", Value: "p"}, {Key: "priority", Value: 0}, {Key: "document", Value: "{}"}}},
		{st.users, bson.D{{Key: "_id", Value: "an"}}},
		{st.things, bson.D{{Key: "_id", Value: "lock-1"}}},
		{st.places, bson.D{{Key: "_id", Value: "home"}}},
	} {
		if _, err := c.coll.InsertOne(ctx, c.doc); err != nil {
			t.Fatalf("%s: first insert: %v", c.coll.Name(), err)
		}
		_, err := c.coll.InsertOne(ctx, c.doc)
		if !mongo.IsDuplicateKeyError(err) {
			t.Fatalf("%s: second insert: %v, want a duplicate key error", c.coll.Name(), err)
		}
	}
	// A different relation of the same user on the same object is fine.
	if _, err := st.rels.InsertOne(ctx, bson.D{{Key: "object", Value: "thing:lock-1"}, {Key: "user", Value: "ruth"}, {Key: "relation", Value: "co_owner"}}); err != nil {
		t.Fatal(err)
	}

	names := map[string]bool{}
	cur, err := st.rels.Indexes().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var specs []bson.M
	if err := cur.All(ctx, &specs); err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		names[s["name"].(string)] = s["unique"] == true
	}
	if !names["object_user_relation"] {
		t.Fatalf("relationships indexes: %v", specs)
	}
}

func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := open(t)
	b, err := Open(ctx, testURI, a.Database().Name())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)

	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*n*4)
	for w, st := range []*Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				// Both writers hammer the same keys (upserts race on insert)…
				shared := policies.Relationship{Thing: fmt.Sprintf("t-%d", i%5), User: "ruth", Relation: policies.RelVisitor, Status: policies.StatusActive}
				if err := st.PutRelationship(ctx, shared); err != nil {
					errs <- err
				}
				if err := st.PutMembership(ctx, policies.Membership{Group: "org:acme", Relation: "member", Member: fmt.Sprintf("user:u%d", i%7)}); err != nil {
					errs <- err
				}
				p := policies.Policy{ID: fmt.Sprintf("p-%d", i%3), Priority: w, Effect: "allow", Subjects: []string{"*"}, Resources: []string{"things/+/state"}, Actions: []policies.Action{policies.ActRead}}
				if err := st.PutPolicy(ctx, "an", p); err != nil {
					errs <- err
				}
				// …and each writes keys of its own.
				if err := st.PutThing(ctx, policies.Thing{ID: fmt.Sprintf("w%d-thing-%d", w, i), Owner: "an", Kind: "sensor"}, ""); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	snap, _ := load(t, a)
	if len(snap.Things) != 2*n || len(snap.Relationships) != 5 || len(snap.Memberships) != 7 || len(snap.Policies) != 3 {
		t.Fatalf("after concurrent writes: %d things, %d relationships, %d memberships, %d policies",
			len(snap.Things), len(snap.Relationships), len(snap.Memberships), len(snap.Policies))
	}
}

func TestOpenServerDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now

	uri := "mongodb://veil:hunter2@" + addr + "/?authSource=admin"
	start := time.Now()
	st, err := Open(context.Background(), uri, "veil")
	took := time.Since(start)
	if err == nil {
		st.Close(context.Background())
		t.Fatal("Open succeeded against a closed port")
	}
	t.Logf("after %s: %v", took, err)
	want := "metadata store unavailable at mongodb://veil:xxxxx@" + addr + "/?authSource=admin: "
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q\nwant prefix %q", err, want)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the password: %v", err)
	}
	if took > OpenTimeout+2*time.Second {
		t.Fatalf("Open took %s, want about %s", took, OpenTimeout)
	}
}

func TestRedactURI(t *testing.T) {
	for in, want := range map[string]string{
		"mongodb://127.0.0.1:27017/":                           "mongodb://127.0.0.1:27017/",
		"mongodb://veil:s3cr@t@db:27017/veil":                  "mongodb://veil:xxxxx@db:27017/veil",
		"mongodb://veil@db":                                    "mongodb://veil@db",
		"mongodb+srv://u:p@cluster.example.net/?retryWrites=1": "mongodb+srv://u:xxxxx@cluster.example.net/?retryWrites=1",
		"mongodb://u:p@a:1,b:2,c:3/db?replicaSet=rs":           "mongodb://u:xxxxx@a:1,b:2,c:3/db?replicaSet=rs",
		"mongodb://u:p@a?x=@y":                                 "mongodb://u:xxxxx@a?x=@y",
		"not a uri":                                            "not a uri",
	} {
		if got := RedactURI(in); got != want {
			t.Errorf("RedactURI(%q) = %q, want %q", in, got, want)
		}
	}
}
