// Package mongo is Veil's metadata store: users, things, places,
// relationships, memberships, owner policies and the argon2id hashes of
// passwords and thing secrets, kept in MongoDB through mongo-driver v1.
//
// The same code runs against a real MongoDB and against the embedded
// FerretDB v1 (SQLite backend) that the broker starts when no MongoDB URI
// is configured, so it sticks to what both support: single-document
// writes, upserts, unique and compound indexes, plain finds. It uses no
// transactions, change streams or aggregation.
//
// # Collections
//
//	users          {_id: name, attributes, admin, password_hash}
//	things         {_id: id, owner, kind, streams, attributes, place, secret_hash}
//	places         {_id: id, owner, parent, attributes}
//	relationships  {_id, object: "thing:lock-1"|"place:home", thing, place, user,
//	                relation, status, valid_from, valid_until}
//	                unique (object, user, relation); index (user)
//	memberships    {_id, group, relation, member}
//	                unique (group, relation, member); index (member)
//	policies       {_id, owner, id, priority, document}
//	                unique (owner, id)
//
// The control plane's collections are listed in control.go, the audit
// trail's day collections in audit.go.
//
// Hashes are PHC strings ("$argon2id$v=19$m=…"); they are only ever
// returned through Load's Credentials and PasswordHash/SecretHash, never
// inside a policies.User or policies.Thing.
//
// # Representation choices
//
// Relationship windows (valid_from, valid_until) are stored as RFC 3339
// strings in UTC with exactly nine fractional digits
// ("2026-12-31T23:00:00.000000000Z"), not as BSON dates: BSON dates
// have millisecond precision and would silently move a window boundary.
// The fixed width keeps the strings in chronological order for range
// queries. Times come back in UTC (time.Equal to what was stored, to the
// nanosecond; the original zone offset is not kept).
//
// A policy is stored as its canonical JSON text (encoding/json of
// policies.Policy, the form policies.ParsePolicy documents as parsing back
// to an equal Policy), next to its owner, id and priority as plain fields
// for indexing. A BSON sub-document would not round-trip: a condition's
// "value" decodes to primitive.A rather than []any, and the policy types
// carry no bson tags.
//
// Empty slices and maps (streams, attributes) come back as nil.
package mongo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/writeconcern"

	"github.com/veil-iot/veil/policies"
)

// DefaultDatabase is the database used when Open is given none.
const DefaultDatabase = "veil"

// OpenTimeout bounds connecting to and pinging the server in Open.
const OpenTimeout = 5 * time.Second

// Collection names.
const (
	CollUsers         = "users"
	CollThings        = "things"
	CollPlaces        = "places"
	CollRelationships = "relationships"
	CollMemberships   = "memberships"
	CollPolicies      = "policies"
)

// ErrNotFound is returned (wrapped) by the Delete methods when there was
// nothing to delete. Deleting is still idempotent: callers that do not
// care test with errors.Is and ignore it.
var ErrNotFound = errors.New("not found")

// Credentials maps a principal ("user:{name}" or "thing:{id}") to its
// argon2id hash (PHC string). Principals without a hash are absent.
type Credentials map[string]string

// Store is the metadata store. It is safe for concurrent use.
type Store struct {
	client *mongo.Client
	db     *mongo.Database

	users, things, places, rels, members, pols *mongo.Collection

	auditDays sync.Map // day collections of the audit trail whose index this process made sure of
}

// Open connects to the MongoDB (or FerretDB) at uri, checks that it answers
// within OpenTimeout, and makes sure the collections' indexes exist.
// database "" means DefaultDatabase. The error of a server that is down
// reads "metadata store unavailable at {uri}: {cause}", with any password
// in the URI redacted.
func Open(ctx context.Context, uri, database string) (*Store, error) {
	if database == "" {
		database = DefaultDatabase
	}
	shown := RedactURI(uri)
	ctx, cancel := context.WithTimeout(ctx, OpenTimeout)
	defer cancel()

	opts := options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(OpenTimeout).
		SetConnectTimeout(OpenTimeout).
		SetAppName("veil")
	if opts.WriteConcern == nil {
		// Acknowledged, journaled writes unless the URI says otherwise:
		// accepted configuration must survive a crash (DESIGN.md, NFR2).
		opts.SetWriteConcern(writeconcern.Journaled())
	}
	client, err := mongo.Connect(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("metadata store at %s: %w", shown, err)
	}
	if err := client.Ping(ctx, nil); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, fmt.Errorf("metadata store unavailable at %s: %w", shown, err)
	}
	db := client.Database(database)
	s := &Store{
		client:  client,
		db:      db,
		users:   db.Collection(CollUsers),
		things:  db.Collection(CollThings),
		places:  db.Collection(CollPlaces),
		rels:    db.Collection(CollRelationships),
		members: db.Collection(CollMemberships),
		pols:    db.Collection(CollPolicies),
	}
	if err := s.ensureIndexes(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, fmt.Errorf("metadata store at %s: creating indexes: %w", shown, err)
	}
	if err := s.ensureControlIndexes(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, fmt.Errorf("metadata store at %s: creating indexes: %w", shown, err)
	}
	return s, nil
}

// RedactURI hides the password of a mongodb:// or mongodb+srv:// URI
// ("mongodb://veil:xxxxx@host/"). It also copes with the multi-host form
// that net/url cannot parse.
func RedactURI(uri string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return uri
	}
	end := len(rest)
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		end = i
	}
	authority := rest[:end]
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return uri
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if hasPassword {
		user += ":xxxxx"
	}
	return scheme + "://" + user + "@" + authority[at+1:] + rest[end:]
}

func (s *Store) ensureIndexes(ctx context.Context) error {
	unique := func(name string, keys bson.D) mongo.IndexModel {
		return mongo.IndexModel{Keys: keys, Options: options.Index().SetName(name).SetUnique(true)}
	}
	plain := func(name string, keys bson.D) mongo.IndexModel {
		return mongo.IndexModel{Keys: keys, Options: options.Index().SetName(name)}
	}
	for _, ix := range []struct {
		c      *mongo.Collection
		models []mongo.IndexModel
	}{
		{s.things, []mongo.IndexModel{plain("owner", bson.D{{Key: "owner", Value: 1}}), plain("place", bson.D{{Key: "place", Value: 1}})}},
		{s.places, []mongo.IndexModel{plain("owner", bson.D{{Key: "owner", Value: 1}}), plain("parent", bson.D{{Key: "parent", Value: 1}})}},
		{s.rels, []mongo.IndexModel{
			unique("object_user_relation", bson.D{{Key: "object", Value: 1}, {Key: "user", Value: 1}, {Key: "relation", Value: 1}}),
			plain("user", bson.D{{Key: "user", Value: 1}}),
		}},
		{s.members, []mongo.IndexModel{
			unique("group_relation_member", bson.D{{Key: "group", Value: 1}, {Key: "relation", Value: 1}, {Key: "member", Value: 1}}),
			plain("member", bson.D{{Key: "member", Value: 1}}),
		}},
		{s.pols, []mongo.IndexModel{unique("owner_id", bson.D{{Key: "owner", Value: 1}, {Key: "id", Value: 1}})}},
	} {
		// One index per createIndexes command: FerretDB v1.24 panics
		// (slice bounds out of range, connection dropped) when one command
		// names two or more indexes that already exist, i.e. on every
		// restart. Creating an existing identical index is a no-op.
		for _, m := range ix.models {
			if _, err := ix.c.Indexes().CreateOne(ctx, m); err != nil {
				return fmt.Errorf("%s: %w", ix.c.Name(), err)
			}
		}
	}
	// users is keyed by _id only; make sure the collection exists so a
	// fresh store looks the same on MongoDB and FerretDB.
	if err := s.db.CreateCollection(ctx, CollUsers); err != nil && !isNamespaceExists(err) {
		return fmt.Errorf("%s: %w", CollUsers, err)
	}
	return nil
}

func isNamespaceExists(err error) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && (ce.Code == 48 || ce.Name == "NamespaceExists")
}

// Close disconnects from the server.
func (s *Store) Close(ctx context.Context) error {
	return s.client.Disconnect(ctx)
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.client.Ping(ctx, nil)
}

// Database is the underlying database, for other collections that live
// next to the metadata (audit records, for instance).
func (s *Store) Database() *mongo.Database { return s.db }

// ---------------------------------------------------------------------------
// Documents.

type userDoc struct {
	Name         string              `bson:"_id"`
	Attributes   policies.Attributes `bson:"attributes,omitempty"`
	Admin        bool                `bson:"admin,omitempty"`
	PasswordHash string              `bson:"password_hash,omitempty"`
}

type thingDoc struct {
	ID         string              `bson:"_id"`
	Owner      string              `bson:"owner,omitempty"`
	Kind       string              `bson:"kind,omitempty"`
	Streams    []string            `bson:"streams,omitempty"`
	Attributes policies.Attributes `bson:"attributes,omitempty"`
	Place      string              `bson:"place,omitempty"`
	SecretHash string              `bson:"secret_hash,omitempty"`
}

type placeDoc struct {
	ID         string              `bson:"_id"`
	Owner      string              `bson:"owner,omitempty"`
	Parent     string              `bson:"parent,omitempty"`
	Attributes policies.Attributes `bson:"attributes,omitempty"`
}

type relDoc struct {
	Object     string `bson:"object"`
	Thing      string `bson:"thing,omitempty"`
	Place      string `bson:"place,omitempty"`
	User       string `bson:"user"`
	Relation   string `bson:"relation"`
	Status     string `bson:"status"`
	ValidFrom  string `bson:"valid_from,omitempty"`
	ValidUntil string `bson:"valid_until,omitempty"`
}

type memberDoc struct {
	Group    string `bson:"group"`
	Relation string `bson:"relation"`
	Member   string `bson:"member"`
}

type policyDoc struct {
	Owner    string `bson:"owner"`
	ID       string `bson:"id"`
	Priority int    `bson:"priority"`
	Document string `bson:"document"`
}

// timeLayout is RFC 3339 in UTC with a fixed nine-digit fraction, so that
// string order is time order.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

func normAttrs(a policies.Attributes) (policies.Attributes, error) {
	n, err := a.Normalize()
	if err != nil || len(n) == 0 {
		return nil, err
	}
	return n, nil
}

// set builds a $set/$unset update from fields: empty values are unset so an
// upsert replaces the item's fields instead of merging with stale ones.
func update(fields bson.D) bson.D {
	set, unset := bson.D{}, bson.D{}
	for _, f := range fields {
		if isEmpty(f.Value) {
			unset = append(unset, bson.E{Key: f.Key, Value: ""})
		} else {
			set = append(set, f)
		}
	}
	u := bson.D{}
	if len(set) > 0 {
		u = append(u, bson.E{Key: "$set", Value: set})
	}
	if len(unset) > 0 {
		u = append(u, bson.E{Key: "$unset", Value: unset})
	}
	return u
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case string:
		return x == ""
	case bool:
		return !x
	case []string:
		return len(x) == 0
	case policies.Attributes:
		return len(x) == 0
	case nil:
		return true
	}
	return false
}

// upsert updates the one document matching filter, inserting it if there is
// none. Two writers racing to insert the same new key may see a duplicate
// key error from the unique index (MongoDB and FerretDB alike); the loser
// retries, and then finds and updates the winner's document.
func upsert(ctx context.Context, c *mongo.Collection, filter, upd bson.D) error {
	var err error
	for range 3 {
		_, err = c.UpdateOne(ctx, filter, upd, options.Update().SetUpsert(true))
		if err == nil || !mongo.IsDuplicateKeyError(err) {
			return err
		}
	}
	return err
}

func deleteOne(ctx context.Context, c *mongo.Collection, filter bson.D, what string) error {
	res, err := c.DeleteOne(ctx, filter)
	if err != nil {
		return fmt.Errorf("delete %s: %w", what, err)
	}
	if res.DeletedCount == 0 {
		return fmt.Errorf("delete %s: %w", what, ErrNotFound)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Users and things.

// PutUser creates or replaces the user u (attributes, admin flag). A
// non-empty passwordHash replaces the stored hash; an empty one keeps it.
func (s *Store) PutUser(ctx context.Context, u policies.User, passwordHash string) error {
	if u.Name == "" {
		return errors.New("put user: name must not be empty")
	}
	attrs, err := normAttrs(u.Attributes)
	if err != nil {
		return fmt.Errorf("put user %q: %w", u.Name, err)
	}
	fields := bson.D{{Key: "attributes", Value: attrs}, {Key: "admin", Value: u.Admin}}
	if passwordHash != "" {
		fields = append(fields, bson.E{Key: "password_hash", Value: passwordHash})
	}
	if err := upsert(ctx, s.users, bson.D{{Key: "_id", Value: u.Name}}, update(fields)); err != nil {
		return fmt.Errorf("put user %q: %w", u.Name, err)
	}
	return nil
}

// DeleteUser removes the user and its password hash. It does not touch the
// user's relationships, memberships or policies.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	return deleteOne(ctx, s.users, bson.D{{Key: "_id", Value: name}}, fmt.Sprintf("user %q", name))
}

// PasswordHash returns the stored argon2id hash of the user's password, or
// "" when the user does not exist or has none.
func (s *Store) PasswordHash(ctx context.Context, name string) (string, error) {
	return s.hash(ctx, s.users, name, "password_hash")
}

// PutThing creates or replaces the thing t. A non-empty secretHash replaces
// the stored hash; an empty one keeps it.
func (s *Store) PutThing(ctx context.Context, t policies.Thing, secretHash string) error {
	if t.ID == "" {
		return errors.New("put thing: id must not be empty")
	}
	attrs, err := normAttrs(t.Attributes)
	if err != nil {
		return fmt.Errorf("put thing %q: %w", t.ID, err)
	}
	fields := bson.D{
		{Key: "owner", Value: t.Owner},
		{Key: "kind", Value: t.Kind},
		{Key: "streams", Value: t.Streams},
		{Key: "attributes", Value: attrs},
		{Key: "place", Value: t.Place},
	}
	if secretHash != "" {
		fields = append(fields, bson.E{Key: "secret_hash", Value: secretHash})
	}
	if err := upsert(ctx, s.things, bson.D{{Key: "_id", Value: t.ID}}, update(fields)); err != nil {
		return fmt.Errorf("put thing %q: %w", t.ID, err)
	}
	return nil
}

// DeleteThing removes the thing and its secret hash. It does not touch the
// thing's relationships.
func (s *Store) DeleteThing(ctx context.Context, id string) error {
	return deleteOne(ctx, s.things, bson.D{{Key: "_id", Value: id}}, fmt.Sprintf("thing %q", id))
}

// SecretHash returns the stored argon2id hash of the thing's secret, or ""
// when the thing does not exist or has none.
func (s *Store) SecretHash(ctx context.Context, id string) (string, error) {
	return s.hash(ctx, s.things, id, "secret_hash")
}

func (s *Store) hash(ctx context.Context, c *mongo.Collection, id, field string) (string, error) {
	var doc bson.M
	err := c.FindOne(ctx, bson.D{{Key: "_id", Value: id}}, options.FindOne().SetProjection(bson.D{{Key: field, Value: 1}})).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s of %q: %w", field, id, err)
	}
	h, _ := doc[field].(string)
	return h, nil
}

// ---------------------------------------------------------------------------
// Places, relationships, memberships.

// PutPlace creates or replaces the place p.
func (s *Store) PutPlace(ctx context.Context, p policies.Place) error {
	if p.ID == "" {
		return errors.New("put place: id must not be empty")
	}
	attrs, err := normAttrs(p.Attributes)
	if err != nil {
		return fmt.Errorf("put place %q: %w", p.ID, err)
	}
	fields := bson.D{{Key: "owner", Value: p.Owner}, {Key: "parent", Value: p.Parent}, {Key: "attributes", Value: attrs}}
	if err := upsert(ctx, s.places, bson.D{{Key: "_id", Value: p.ID}}, update(fields)); err != nil {
		return fmt.Errorf("put place %q: %w", p.ID, err)
	}
	return nil
}

// DeletePlace removes the place. Things in it and relationships on it stay.
func (s *Store) DeletePlace(ctx context.Context, id string) error {
	return deleteOne(ctx, s.places, bson.D{{Key: "_id", Value: id}}, fmt.Sprintf("place %q", id))
}

// PutRelationship creates or replaces the relationship keyed by its object
// (thing or place), user and relation: status and window are replaced.
func (s *Store) PutRelationship(ctx context.Context, r policies.Relationship) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("put relationship %s %s %s: %w", r.Object(), r.User, r.Relation, err)
	}
	filter := bson.D{{Key: "object", Value: r.Object()}, {Key: "user", Value: r.User}, {Key: "relation", Value: string(r.Relation)}}
	fields := bson.D{
		{Key: "thing", Value: r.Thing},
		{Key: "place", Value: r.Place},
		{Key: "status", Value: string(r.Status)},
		{Key: "valid_from", Value: formatTime(r.ValidFrom)},
		{Key: "valid_until", Value: formatTime(r.ValidUntil)},
	}
	if err := upsert(ctx, s.rels, filter, update(fields)); err != nil {
		return fmt.Errorf("put relationship %s %s %s: %w", r.Object(), r.User, r.Relation, err)
	}
	return nil
}

// DeleteRelationship removes the relation of user on the thing or the place
// (exactly one of thing, place is set), like policies.Engine's method.
func (s *Store) DeleteRelationship(ctx context.Context, thing, place, user string, rel policies.Relation) error {
	if (thing == "") == (place == "") {
		return errors.New("delete relationship: exactly one of thing or place must be set")
	}
	r := policies.Relationship{Thing: thing, Place: place}
	filter := bson.D{{Key: "object", Value: r.Object()}, {Key: "user", Value: user}, {Key: "relation", Value: string(rel)}}
	return deleteOne(ctx, s.rels, filter, fmt.Sprintf("relationship %s %s %s", r.Object(), user, rel))
}

// PutMembership adds the membership; adding it again changes nothing.
func (s *Store) PutMembership(ctx context.Context, m policies.Membership) error {
	if m.Group == "" || m.Relation == "" || m.Member == "" {
		return errors.New("put membership: group, relation and member must not be empty")
	}
	filter := bson.D{{Key: "group", Value: m.Group}, {Key: "relation", Value: m.Relation}, {Key: "member", Value: m.Member}}
	// An upsert needs an update; re-setting the key fields is a no-op.
	if err := upsert(ctx, s.members, filter, bson.D{{Key: "$set", Value: filter}}); err != nil {
		return fmt.Errorf("put membership %s %s: %w", m.Userset(), m.Member, err)
	}
	return nil
}

// DeleteMembership removes the membership.
func (s *Store) DeleteMembership(ctx context.Context, m policies.Membership) error {
	filter := bson.D{{Key: "group", Value: m.Group}, {Key: "relation", Value: m.Relation}, {Key: "member", Value: m.Member}}
	return deleteOne(ctx, s.members, filter, fmt.Sprintf("membership %s %s", m.Userset(), m.Member))
}

// ---------------------------------------------------------------------------
// Policies.

// PutPolicy creates or replaces owner's policy p.ID. The caller validates
// p (policies.ParsePolicy); the store keeps its canonical JSON.
func (s *Store) PutPolicy(ctx context.Context, owner string, p policies.Policy) error {
	if owner == "" || p.ID == "" {
		return errors.New("put policy: owner and id must not be empty")
	}
	text, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("put policy %s/%s: %w", owner, p.ID, err)
	}
	filter := bson.D{{Key: "owner", Value: owner}, {Key: "id", Value: p.ID}}
	upd := bson.D{{Key: "$set", Value: bson.D{{Key: "priority", Value: p.Priority}, {Key: "document", Value: string(text)}}}}
	if err := upsert(ctx, s.pols, filter, upd); err != nil {
		return fmt.Errorf("put policy %s/%s: %w", owner, p.ID, err)
	}
	return nil
}

// DeletePolicy removes owner's policy id.
func (s *Store) DeletePolicy(ctx context.Context, owner, id string) error {
	return deleteOne(ctx, s.pols, bson.D{{Key: "owner", Value: owner}, {Key: "id", Value: id}}, fmt.Sprintf("policy %s/%s", owner, id))
}

// Policies returns owner's policies ordered by id.
func (s *Store) Policies(ctx context.Context, owner string) ([]policies.Policy, error) {
	ops, err := s.loadPolicies(ctx, bson.D{{Key: "owner", Value: owner}})
	if err != nil {
		return nil, err
	}
	out := make([]policies.Policy, len(ops))
	for i, op := range ops {
		out[i] = op.Policy
	}
	return out, nil
}

func (s *Store) loadPolicies(ctx context.Context, filter bson.D) ([]policies.OwnedPolicy, error) {
	var docs []policyDoc
	if err := findAll(ctx, s.pols, filter, &docs); err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	out := make([]policies.OwnedPolicy, 0, len(docs))
	for _, d := range docs {
		var p policies.Policy
		if err := json.Unmarshal([]byte(d.Document), &p); err != nil {
			return nil, fmt.Errorf("read policy %s/%s: %w", d.Owner, d.ID, err)
		}
		out = append(out, policies.OwnedPolicy{Owner: d.Owner, Policy: p})
	}
	slices.SortFunc(out, func(a, b policies.OwnedPolicy) int {
		return cmpStrings(a.Owner, b.Owner, a.Policy.ID, b.Policy.ID)
	})
	return out, nil
}

// ---------------------------------------------------------------------------
// Load.

// Load reads the whole metadata state and the credential hashes. Items come
// in a stable order (by key) so two loads of the same state are equal.
func (s *Store) Load(ctx context.Context) (policies.Snapshot, Credentials, error) {
	var snap policies.Snapshot
	creds := Credentials{}

	var users []userDoc
	if err := findAll(ctx, s.users, bson.D{}, &users); err != nil {
		return snap, nil, fmt.Errorf("read users: %w", err)
	}
	for _, u := range users {
		snap.Users = append(snap.Users, policies.User{Name: u.Name, Attributes: nilIfEmpty(u.Attributes), Admin: u.Admin})
		if u.PasswordHash != "" {
			creds["user:"+u.Name] = u.PasswordHash
		}
	}
	slices.SortFunc(snap.Users, func(a, b policies.User) int { return strings.Compare(a.Name, b.Name) })

	var things []thingDoc
	if err := findAll(ctx, s.things, bson.D{}, &things); err != nil {
		return snap, nil, fmt.Errorf("read things: %w", err)
	}
	for _, t := range things {
		snap.Things = append(snap.Things, policies.Thing{
			ID: t.ID, Owner: t.Owner, Kind: t.Kind, Streams: nilIfNoStreams(t.Streams),
			Attributes: nilIfEmpty(t.Attributes), Place: t.Place,
		})
		if t.SecretHash != "" {
			creds["thing:"+t.ID] = t.SecretHash
		}
	}
	slices.SortFunc(snap.Things, func(a, b policies.Thing) int { return strings.Compare(a.ID, b.ID) })

	var places []placeDoc
	if err := findAll(ctx, s.places, bson.D{}, &places); err != nil {
		return snap, nil, fmt.Errorf("read places: %w", err)
	}
	for _, p := range places {
		snap.Places = append(snap.Places, policies.Place{ID: p.ID, Owner: p.Owner, Parent: p.Parent, Attributes: nilIfEmpty(p.Attributes)})
	}
	slices.SortFunc(snap.Places, func(a, b policies.Place) int { return strings.Compare(a.ID, b.ID) })

	rels, err := s.relationships(ctx, bson.D{})
	if err != nil {
		return snap, nil, err
	}
	snap.Relationships = rels

	var members []memberDoc
	if err := findAll(ctx, s.members, bson.D{}, &members); err != nil {
		return snap, nil, fmt.Errorf("read memberships: %w", err)
	}
	for _, m := range members {
		snap.Memberships = append(snap.Memberships, policies.Membership{Group: m.Group, Relation: m.Relation, Member: m.Member})
	}
	slices.SortFunc(snap.Memberships, func(a, b policies.Membership) int {
		return cmpStrings(a.Group, b.Group, a.Relation, b.Relation, a.Member, b.Member)
	})

	pols, err := s.loadPolicies(ctx, bson.D{})
	if err != nil {
		return snap, nil, err
	}
	snap.Policies = nilIfNone(pols)
	return snap, creds, nil
}

func (s *Store) relationships(ctx context.Context, filter bson.D) ([]policies.Relationship, error) {
	var docs []relDoc
	if err := findAll(ctx, s.rels, filter, &docs); err != nil {
		return nil, fmt.Errorf("read relationships: %w", err)
	}
	var out []policies.Relationship
	for _, d := range docs {
		from, err := parseTime(d.ValidFrom)
		if err != nil {
			return nil, fmt.Errorf("read relationship %s %s %s: valid_from: %w", d.Object, d.User, d.Relation, err)
		}
		until, err := parseTime(d.ValidUntil)
		if err != nil {
			return nil, fmt.Errorf("read relationship %s %s %s: valid_until: %w", d.Object, d.User, d.Relation, err)
		}
		out = append(out, policies.Relationship{
			Thing: d.Thing, Place: d.Place, User: d.User,
			Relation: policies.Relation(d.Relation), Status: policies.Status(d.Status),
			ValidFrom: from, ValidUntil: until,
		})
	}
	slices.SortFunc(out, func(a, b policies.Relationship) int {
		return cmpStrings(a.Object(), b.Object(), a.User, b.User, string(a.Relation), string(b.Relation))
	})
	return out, nil
}

func findAll(ctx context.Context, c *mongo.Collection, filter bson.D, out any) error {
	cur, err := c.Find(ctx, filter)
	if err != nil {
		return err
	}
	return cur.All(ctx, out)
}

// cmpStrings compares pairs (a0, b0), (a1, b1), … in order.
func cmpStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := strings.Compare(pairs[i], pairs[i+1]); c != 0 {
			return c
		}
	}
	return 0
}

func nilIfEmpty(a policies.Attributes) policies.Attributes {
	if len(a) == 0 {
		return nil
	}
	return a
}

func nilIfNoStreams(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func nilIfNone[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
