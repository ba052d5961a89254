package mongo

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Control-plane collections (docs/control-plane.md).
//
//	invitations  {_id: id, invitee, object, thing, place, relation, inviter,
//	              valid_from, valid_until, created, expires, status}
//	transitions  {_id, at, object, user, relation, from, to, by, reason, invitation}
//	factory      {_id: serial, secret_hash, model, vendor, enrolled_at, thing}
//	claims       {_id: thing, code_hash, created}
//	audit        {_id: key|writer, owner, minute, who, thing, stream, action, purpose,
//	              effect, rule, policy, policy_owner, count, expire_at}
const (
	CollInvitations = "invitations"
	CollTransitions = "transitions"
	CollFactory     = "factory"
	CollClaims      = "claims"
	CollAudit       = "audit"
)

// Invitation is a relationship offered to a user, pending until answered.
type Invitation struct {
	ID         string    `bson:"_id" json:"id"`
	Invitee    string    `bson:"invitee" json:"invitee"`
	Object     string    `bson:"object" json:"object"`
	Thing      string    `bson:"thing,omitempty" json:"thing,omitempty"`
	Place      string    `bson:"place,omitempty" json:"place,omitempty"`
	Relation   string    `bson:"relation" json:"relation"`
	Inviter    string    `bson:"inviter" json:"inviter"`
	ValidFrom  string    `bson:"valid_from,omitempty" json:"valid_from,omitempty"`
	ValidUntil string    `bson:"valid_until,omitempty" json:"valid_until,omitempty"`
	Created    time.Time `bson:"created" json:"created"`
	Expires    time.Time `bson:"expires" json:"expires"`
	Status     string    `bson:"status" json:"status"` // pending, accepted, declined, expired, revoked
}

// Transition records one change of a relationship's life-cycle.
type Transition struct {
	At         time.Time `bson:"at" json:"at"`
	Object     string    `bson:"object" json:"object"`
	User       string    `bson:"user" json:"user"`
	Relation   string    `bson:"relation" json:"relation"`
	From       string    `bson:"from" json:"from"` // "" for a new relationship
	To         string    `bson:"to" json:"to"`     // pending, active, declined, expired, revoked, ended
	By         string    `bson:"by" json:"by"`
	Reason     string    `bson:"reason,omitempty" json:"reason,omitempty"`
	Invitation string    `bson:"invitation,omitempty" json:"invitation,omitempty"`
}

// FactoryEntry is a device's factory credential (hashed) and model.
type FactoryEntry struct {
	Serial     string    `bson:"_id"`
	SecretHash string    `bson:"secret_hash"`
	Model      string    `bson:"model,omitempty"`
	Vendor     string    `bson:"vendor,omitempty"`
	EnrolledAt time.Time `bson:"enrolled_at,omitempty"`
	Thing      string    `bson:"thing,omitempty"`
}

// AuditRecord is the count of equal access decisions within one minute.
type AuditRecord struct {
	Owner       string    `bson:"owner" json:"-"`
	Minute      time.Time `bson:"minute" json:"minute"`
	Who         string    `bson:"who" json:"who"`
	Thing       string    `bson:"thing" json:"thing"`
	Stream      string    `bson:"stream,omitempty" json:"stream,omitempty"`
	Action      string    `bson:"action" json:"action"`
	Purpose     string    `bson:"purpose,omitempty" json:"purpose,omitempty"`
	Effect      string    `bson:"effect" json:"effect"` // allow, deny, constrained
	Rule        string    `bson:"rule" json:"rule"`
	Policy      string    `bson:"policy,omitempty" json:"policy,omitempty"`
	PolicyOwner string    `bson:"policy_owner,omitempty" json:"policy_owner,omitempty"`
	Count       int64     `bson:"count" json:"count"`
}

func (s *Store) coll(name string) *mongo.Collection { return s.db.Collection(name) }

// ensureControlIndexes creates the control plane's indexes. The audit
// retention uses a TTL index where the server has them (MongoDB); FerretDB
// v1 has none, so AuditTTL reports false and the caller prunes itself.
func (s *Store) ensureControlIndexes(ctx context.Context) error {
	plain := func(name string, keys bson.D) mongo.IndexModel {
		return mongo.IndexModel{Keys: keys, Options: options.Index().SetName(name)}
	}
	for _, ix := range []struct {
		c string
		m mongo.IndexModel
	}{
		{CollInvitations, plain("invitee", bson.D{{Key: "invitee", Value: 1}})},
		{CollInvitations, plain("status", bson.D{{Key: "status", Value: 1}})},
		{CollTransitions, plain("object", bson.D{{Key: "object", Value: 1}})},
		{CollAudit, plain("owner_minute", bson.D{{Key: "owner", Value: 1}, {Key: "minute", Value: 1}})},
	} {
		if _, err := s.coll(ix.c).Indexes().CreateOne(ctx, ix.m); err != nil {
			return fmt.Errorf("%s: %w", ix.c, err)
		}
	}
	ttl := mongo.IndexModel{Keys: bson.D{{Key: "expire_at", Value: 1}}, Options: options.Index().SetName("ttl").SetExpireAfterSeconds(0)}
	if _, err := s.coll(CollAudit).Indexes().CreateOne(ctx, ttl); err == nil {
		s.auditTTL = true
	}
	return nil
}

// AuditTTL reports whether the server expires audit records by itself.
func (s *Store) AuditTTL() bool { return s.auditTTL }

// ---------------------------------------------------------------------------
// Invitations and transitions.

// PutInvitation creates or replaces an invitation.
func (s *Store) PutInvitation(ctx context.Context, inv Invitation) error {
	_, err := s.coll(CollInvitations).ReplaceOne(ctx, bson.D{{Key: "_id", Value: inv.ID}}, inv, options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("put invitation %s: %w", inv.ID, err)
	}
	return nil
}

// Invitation returns the invitation id; ok is false when there is none.
func (s *Store) Invitation(ctx context.Context, id string) (Invitation, bool, error) {
	var inv Invitation
	err := s.coll(CollInvitations).FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&inv)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Invitation{}, false, nil
	}
	if err != nil {
		return Invitation{}, false, fmt.Errorf("read invitation %s: %w", id, err)
	}
	return inv, true, nil
}

// SetInvitationStatus moves invitation id from status from to status to;
// changed is false when it was not in status from.
func (s *Store) SetInvitationStatus(ctx context.Context, id, from, to string) (bool, error) {
	res, err := s.coll(CollInvitations).UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "status", Value: from}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: to}}}})
	if err != nil {
		return false, fmt.Errorf("update invitation %s: %w", id, err)
	}
	return res.MatchedCount == 1, nil
}

// Invitations returns the invitations in status (all when status is "").
func (s *Store) Invitations(ctx context.Context, status string) ([]Invitation, error) {
	filter := bson.D{}
	if status != "" {
		filter = bson.D{{Key: "status", Value: status}}
	}
	var out []Invitation
	if err := findAll(ctx, s.coll(CollInvitations), filter, &out); err != nil {
		return nil, fmt.Errorf("read invitations: %w", err)
	}
	return out, nil
}

// RecordTransition appends t to the relationship history.
func (s *Store) RecordTransition(ctx context.Context, t Transition) error {
	if _, err := s.coll(CollTransitions).InsertOne(ctx, t); err != nil {
		return fmt.Errorf("record transition %s %s: %w", t.Object, t.User, err)
	}
	return nil
}

// Transitions returns the history of an object ("thing:lock-1"), oldest first.
func (s *Store) Transitions(ctx context.Context, object string) ([]Transition, error) {
	cur, err := s.coll(CollTransitions).Find(ctx, bson.D{{Key: "object", Value: object}}, options.Find().SetSort(bson.D{{Key: "at", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("read transitions: %w", err)
	}
	var out []Transition
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("read transitions: %w", err)
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// Factory registry and claim codes.

// PutFactory creates or updates a factory entry's hash, model and vendor;
// whether (and as what) it enrolled is kept.
func (s *Store) PutFactory(ctx context.Context, e FactoryEntry) error {
	if e.Serial == "" || e.SecretHash == "" {
		return errors.New("put factory entry: serial and secret hash must not be empty")
	}
	upd := update(bson.D{{Key: "secret_hash", Value: e.SecretHash}, {Key: "model", Value: e.Model}, {Key: "vendor", Value: e.Vendor}})
	if err := upsert(ctx, s.coll(CollFactory), bson.D{{Key: "_id", Value: e.Serial}}, upd); err != nil {
		return fmt.Errorf("put factory entry %q: %w", e.Serial, err)
	}
	return nil
}

// Factory returns the factory entry of serial.
func (s *Store) Factory(ctx context.Context, serial string) (FactoryEntry, bool, error) {
	var e FactoryEntry
	err := s.coll(CollFactory).FindOne(ctx, bson.D{{Key: "_id", Value: serial}}).Decode(&e)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return FactoryEntry{}, false, nil
	}
	if err != nil {
		return FactoryEntry{}, false, fmt.Errorf("read factory entry %q: %w", serial, err)
	}
	return e, true, nil
}

// FactoryHash returns the stored factory secret hash of serial, "" if none.
func (s *Store) FactoryHash(ctx context.Context, serial string) (string, error) {
	return s.hash(ctx, s.coll(CollFactory), serial, "secret_hash")
}

// MarkEnrolled records that serial enrolled as thing; ok is false when it
// had already enrolled (two racing requests: exactly one wins).
func (s *Store) MarkEnrolled(ctx context.Context, serial, thing string, at time.Time) (bool, error) {
	res, err := s.coll(CollFactory).UpdateOne(ctx,
		bson.D{{Key: "_id", Value: serial}, {Key: "enrolled_at", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "enrolled_at", Value: at}, {Key: "thing", Value: thing}}}})
	if err != nil {
		return false, fmt.Errorf("mark %q enrolled: %w", serial, err)
	}
	return res.MatchedCount == 1, nil
}

// UnmarkEnrolled undoes MarkEnrolled (an enrolment that failed part-way).
func (s *Store) UnmarkEnrolled(ctx context.Context, serial string) error {
	_, err := s.coll(CollFactory).UpdateOne(ctx, bson.D{{Key: "_id", Value: serial}},
		bson.D{{Key: "$unset", Value: bson.D{{Key: "enrolled_at", Value: ""}, {Key: "thing", Value: ""}}}})
	return err
}

// PutClaim stores the hash of a thing's claim code.
func (s *Store) PutClaim(ctx context.Context, thing, codeHash string, at time.Time) error {
	_, err := s.coll(CollClaims).ReplaceOne(ctx, bson.D{{Key: "_id", Value: thing}},
		bson.D{{Key: "_id", Value: thing}, {Key: "code_hash", Value: codeHash}, {Key: "created", Value: at}}, options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("put claim code of %q: %w", thing, err)
	}
	return nil
}

// ClaimHash returns the hash of a thing's claim code, "" if it has none.
func (s *Store) ClaimHash(ctx context.Context, thing string) (string, error) {
	return s.hash(ctx, s.coll(CollClaims), thing, "code_hash")
}

// DeleteClaim removes a thing's claim code; ok is false if it had none
// (someone else claimed it first).
func (s *Store) DeleteClaim(ctx context.Context, thing string) (bool, error) {
	res, err := s.coll(CollClaims).DeleteOne(ctx, bson.D{{Key: "_id", Value: thing}})
	if err != nil {
		return false, fmt.Errorf("delete claim code of %q: %w", thing, err)
	}
	return res.DeletedCount == 1, nil
}

// ---------------------------------------------------------------------------
// Audit.

// auditKey identifies what a record counts: records with the same key are
// one aggregate, however many documents hold it.
func auditKey(r *AuditRecord) string {
	return fmt.Sprintf("%s|%d|%s|%s|%s|%s|%s|%s|%s|%s|%s", r.Owner, r.Minute.Unix(), r.Who, r.Thing, r.Stream, r.Action,
		r.Purpose, r.Effect, r.Rule, r.Policy, r.PolicyOwner)
}

// AddAudit stores the counts of records as new documents; records expire
// retention after their minute. Documents are only ever inserted, never
// updated: an upsert is a lookup by _id, which FerretDB v1's SQLite backend
// answers by scanning the whole collection (its _id index expression does
// not match its own queries'), so updating minute aggregates in place slowed
// down as the trail grew. A key's counts may thus span several documents
// (several writers, or a broker restarted within a minute); Audit adds them
// up.
//
// writer names the caller (unique per process run): a document's _id is
// its key and writer, so retrying a batch that partly landed stores
// nothing twice.
func (s *Store) AddAudit(ctx context.Context, writer string, records []AuditRecord, retention time.Duration) error {
	if len(records) == 0 {
		return nil
	}
	docs := make([]any, 0, len(records))
	for i := range records {
		r := &records[i]
		docs = append(docs, bson.D{
			{Key: "_id", Value: auditKey(r) + "|" + writer},
			{Key: "owner", Value: r.Owner}, {Key: "minute", Value: r.Minute}, {Key: "who", Value: r.Who},
			{Key: "thing", Value: r.Thing}, {Key: "stream", Value: r.Stream}, {Key: "action", Value: r.Action},
			{Key: "purpose", Value: r.Purpose}, {Key: "effect", Value: r.Effect}, {Key: "rule", Value: r.Rule},
			{Key: "policy", Value: r.Policy}, {Key: "policy_owner", Value: r.PolicyOwner},
			{Key: "count", Value: r.Count}, {Key: "expire_at", Value: r.Minute.Add(retention)},
		})
	}
	_, err := s.coll(CollAudit).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err != nil && !onlyDuplicates(err) {
		return fmt.Errorf("write audit records: %w", err)
	}
	return nil
}

// onlyDuplicates reports whether every write of a failed insert failed on a
// duplicate key: those documents are already stored.
func onlyDuplicates(err error) bool {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return false
	}
	for _, we := range bwe.WriteErrors {
		if we.Code != 11000 {
			return false
		}
	}
	return true
}

// Audit returns owner's records with since <= minute < until, oldest first
// (then by key), at most limit of them, each key's documents added up.
func (s *Store) Audit(ctx context.Context, owner string, since, until time.Time, limit int) ([]AuditRecord, error) {
	filter := bson.D{{Key: "owner", Value: owner}, {Key: "minute", Value: bson.D{{Key: "$gte", Value: since}, {Key: "$lt", Value: until}}}}
	cur, err := s.coll(CollAudit).Find(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("read audit records: %w", err)
	}
	var docs []AuditRecord
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("read audit records: %w", err)
	}
	return MergeAudit(docs, limit), nil
}

// MergeAudit adds up records of the same key and returns them oldest first
// (then by key), at most limit of them (limit <= 0: all).
func MergeAudit(records []AuditRecord, limit int) []AuditRecord {
	byKey := make(map[string]int, len(records))
	var out []AuditRecord
	var keys []string
	for _, r := range records {
		k := auditKey(&r)
		if i, ok := byKey[k]; ok {
			out[i].Count += r.Count
			continue
		}
		byKey[k] = len(out)
		r.Minute = r.Minute.UTC()
		out = append(out, r)
		keys = append(keys, k)
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool {
		ra, rb := &out[idx[a]], &out[idx[b]]
		if !ra.Minute.Equal(rb.Minute) {
			return ra.Minute.Before(rb.Minute)
		}
		return keys[idx[a]] < keys[idx[b]]
	})
	sorted := make([]AuditRecord, len(out))
	for i, j := range idx {
		sorted[i] = out[j]
	}
	if limit > 0 && len(sorted) > limit {
		sorted = sorted[:limit]
	}
	return sorted
}

// PruneAudit deletes records that expired before now (servers without TTL indexes).
func (s *Store) PruneAudit(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.coll(CollAudit).DeleteMany(ctx, bson.D{{Key: "expire_at", Value: bson.D{{Key: "$lt", Value: now}}}})
	if err != nil {
		return 0, fmt.Errorf("prune audit records: %w", err)
	}
	return res.DeletedCount, nil
}

// FactoryHashes returns every serial's factory secret hash.
func (s *Store) FactoryHashes(ctx context.Context) (map[string]string, error) {
	var docs []FactoryEntry
	if err := findAll(ctx, s.coll(CollFactory), bson.D{}, &docs); err != nil {
		return nil, fmt.Errorf("read factory registry: %w", err)
	}
	out := make(map[string]string, len(docs))
	for _, d := range docs {
		out[d.Serial] = d.SecretHash
	}
	return out, nil
}
