package mongo

import (
	"context"
	"errors"
	"fmt"
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
//	factory      {_id: serial, secret_hash, model, vendor, enrolled_at, thing, retired_at}
//	claims       {_id: thing, code_hash, created}
//	seeds        {_id: item key, item, secret_hash}
//
// The audit trail has collections of its own, one per day (audit.go).
const (
	CollInvitations = "invitations"
	CollTransitions = "transitions"
	CollFactory     = "factory"
	CollClaims      = "claims"
	CollSeeds       = "seeds"
)

// Seed records a bootstrap item the control plane can edit (a thing, a
// relationship, a policy) as the bootstrap file last gave it: the control
// plane owns what a file seeded, so a restart writes again only what the
// file changed since (broker.Bootstrap.Apply).
type Seed struct {
	Key  string `bson:"_id"`  // "thing:lock-1", `relation:["thing:lock-1","an","owner"]`, `policy:["an","doctor-thermo"]`
	Item string `bson:"item"` // the item as the file gave it, JSON, without its secret
	// SecretHash is the argon2id hash of the thing secret the file gave,
	// as stored when seeded ("" if none): whether the stored secret is
	// still the seeded one, without keeping anything faster to guess from.
	SecretHash string `bson:"secret_hash,omitempty"`
}

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
	// RetiredAt is when the thing it enrolled as was deleted: the serial
	// does not enrol again (an enrolment that stopped part-way has none).
	RetiredAt time.Time `bson:"retired_at,omitempty"`
}

func (s *Store) coll(name string) *mongo.Collection { return s.db.Collection(name) }

// ensureControlIndexes creates the control plane's indexes.
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
	} {
		if _, err := s.coll(ix.c).Indexes().CreateOne(ctx, ix.m); err != nil {
			return fmt.Errorf("%s: %w", ix.c, err)
		}
	}
	return nil
}

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

// RetireFactoryOf marks the factory entry that enrolled as thing retired
// (the thing is being deleted), so that its serial does not enrol again.
func (s *Store) RetireFactoryOf(ctx context.Context, thing string, at time.Time) error {
	_, err := s.coll(CollFactory).UpdateMany(ctx, bson.D{{Key: "thing", Value: thing}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "retired_at", Value: at}}}})
	if err != nil {
		return fmt.Errorf("retire the factory entry of %q: %w", thing, err)
	}
	return nil
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

// Seeds returns the bootstrap items seeded so far, by key.
func (s *Store) Seeds(ctx context.Context) (map[string]Seed, error) {
	var docs []Seed
	if err := findAll(ctx, s.coll(CollSeeds), bson.D{}, &docs); err != nil {
		return nil, fmt.Errorf("read bootstrap seeds: %w", err)
	}
	out := make(map[string]Seed, len(docs))
	for _, d := range docs {
		out[d.Key] = d
	}
	return out, nil
}

// SetSecretHash replaces the secret hash of the thing id if the thing
// exists (it is not created); ok says whether it did.
func (s *Store) SetSecretHash(ctx context.Context, id, secretHash string) (bool, error) {
	res, err := s.things.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{{Key: "secret_hash", Value: secretHash}}}})
	if err != nil {
		return false, fmt.Errorf("set the secret of thing %q: %w", id, err)
	}
	return res.MatchedCount == 1, nil
}

// PutSeed records a seeded bootstrap item.
func (s *Store) PutSeed(ctx context.Context, seed Seed) error {
	_, err := s.coll(CollSeeds).ReplaceOne(ctx, bson.D{{Key: "_id", Value: seed.Key}}, seed, options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("put bootstrap seed %s: %w", seed.Key, err)
	}
	return nil
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
