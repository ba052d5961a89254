package mongo

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// The audit trail (docs/control-plane.md) is stored in one collection per
// UTC day, named by auditCollection, each holding one document per owner,
// minute and write:
//
//	audit.2026-11-26  {_id: owner|unix minute|writer|n, owner, minute,
//	                   records: "[{who, thing, stream, action, purpose,
//	                   effect, rule, policy, policy_owner, count}, …]"}
//	                  index (owner, minute)
//
// The shape is set by the embedded FerretDB v1. Its SQLite backend answers
// every query, even an _id lookup, by reading every document of the
// collection, and it decodes documents field by field at a high cost: on
// the benchmark machine (2026-11-26) one owner's one-hour query over 21,000
// one-record documents took 4.7 s, over 700 documents of 30 records each
// 4.6 s, over 1,440 documents whose records are one JSON string 0.16 s.
// So a query reads only the days it covers, a minute's records are one
// string, and retention drops whole days. On MongoDB the index serves the
// same queries.
const (
	auditPrefix    = "audit."
	auditDayFormat = "2006-01-02"
	// legacyAudit is where Veil kept the trail before day collections: one
	// document per record. MigrateLegacyAudit moves it.
	legacyAudit = "audit"
)

// MaxAuditBatch bounds the records of one batch, keeping a document far
// below MongoDB's 16 MB limit.
const MaxAuditBatch = 2000

// AuditRecord is the count of equal access decisions within one minute.
type AuditRecord struct {
	Owner       string    `bson:"owner" json:"-"`
	Minute      time.Time `bson:"minute" json:"minute,omitzero"`
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

// MaxAuditField bounds the stream and purpose a record keeps (see
// ClipAuditField).
const MaxAuditField = 256

// ClipAuditField cuts s to MaxAuditField bytes, marking the cut with "…".
// A record's stream and purpose come from clients (the topic, a user
// property) and may be as long as a packet, while a batch of MaxAuditBatch
// records must stay a document below MongoDB's 16 MB. The cut is a copy, so
// a record does not keep a client's whole packet alive.
func ClipAuditField(s string) string {
	if len(s) <= MaxAuditField {
		return s
	}
	cut := MaxAuditField - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.Clone(s[:cut]) + "…"
}

// AuditBatch is one write of one owner's records of one minute: a stored
// document. Its ID makes a retried write store nothing twice; build it
// with AuditBatchID.
type AuditBatch struct {
	ID      string
	Owner   string
	Minute  time.Time
	Records []AuditRecord // their Owner and Minute are the batch's
}

// AuditBatchID names the n-th batch a writer (unique per process run)
// writes for owner and minute. Joined by "|", yet no two batches share an
// id: an owner's name may hold "|", but minute and n are numbers and the
// writer (hex, or "legacy") holds none, so an id splits one way only, from
// the right. (A shared id would drop a batch as already stored.)
func AuditBatchID(owner string, minute time.Time, writer string, n int64) string {
	return fmt.Sprintf("%s|%d|%s|%d", owner, minute.Unix()/60, writer, n)
}

// auditCollection is the collection holding the records of t's UTC day.
func auditCollection(t time.Time) string { return auditPrefix + t.UTC().Format(auditDayFormat) }

type auditDoc struct {
	ID      string    `bson:"_id"`
	Owner   string    `bson:"owner"`
	Minute  time.Time `bson:"minute"`
	Records string    `bson:"records"`
}

// AddAudit stores batches, each as a new document in its day's collection.
// Batches already stored (a retry of a write that partly landed) are
// skipped. A batch holds 1 to MaxAuditBatch records.
func (s *Store) AddAudit(ctx context.Context, batches []AuditBatch) error {
	byDay := map[string][]any{}
	var days []string
	for _, b := range batches {
		if len(b.Records) == 0 || len(b.Records) > MaxAuditBatch {
			return fmt.Errorf("audit batch %s: %d records, want 1 to %d", b.ID, len(b.Records), MaxAuditBatch)
		}
		stored := make([]AuditRecord, len(b.Records))
		for i, r := range b.Records {
			r.Owner, r.Minute = "", time.Time{}
			stored[i] = r
		}
		raw, err := json.Marshal(stored)
		if err != nil {
			return fmt.Errorf("encode audit batch %s: %w", b.ID, err)
		}
		day := auditCollection(b.Minute)
		if _, ok := byDay[day]; !ok {
			days = append(days, day)
		}
		byDay[day] = append(byDay[day], auditDoc{ID: b.ID, Owner: b.Owner, Minute: b.Minute.UTC(), Records: string(raw)})
	}
	// Every day is tried: one that fails does not hold the others back.
	var errs []error
	for _, day := range days {
		if err := s.ensureAuditDay(ctx, day); err != nil {
			errs = append(errs, err)
			continue
		}
		_, err := s.coll(day).InsertMany(ctx, byDay[day], options.InsertMany().SetOrdered(false))
		if err != nil && !onlyDuplicates(err) {
			errs = append(errs, fmt.Errorf("write audit records to %s: %w", day, err))
		}
	}
	return errors.Join(errs...)
}

// ensureAuditDay creates a day collection's index, once per process.
func (s *Store) ensureAuditDay(ctx context.Context, day string) error {
	if _, ok := s.auditDays.Load(day); ok {
		return nil
	}
	ix := mongo.IndexModel{Keys: bson.D{{Key: "owner", Value: 1}, {Key: "minute", Value: 1}}, Options: options.Index().SetName("owner_minute")}
	if _, err := s.coll(day).Indexes().CreateOne(ctx, ix); err != nil {
		return fmt.Errorf("index of %s: %w", day, err)
	}
	s.auditDays.Store(day, true)
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

// auditDayCollections lists the stored day collections, oldest first,
// with the start of each day.
func (s *Store) auditDayCollections(ctx context.Context) ([]string, []time.Time, error) {
	names, err := s.db.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return nil, nil, fmt.Errorf("list audit days: %w", err)
	}
	slices.Sort(names)
	var days []string
	var starts []time.Time
	for _, n := range names {
		if !strings.HasPrefix(n, auditPrefix) {
			continue
		}
		start, err := time.Parse(auditDayFormat, n[len(auditPrefix):])
		if err != nil {
			continue // not ours
		}
		days, starts = append(days, n), append(starts, start)
	}
	return days, starts, nil
}

// AuditBatches returns the stored batches of owner with since <= minute <
// until, reading only the days they fall on.
func (s *Store) AuditBatches(ctx context.Context, owner string, since, until time.Time) ([]AuditBatch, error) {
	days, starts, err := s.auditDayCollections(ctx)
	if err != nil {
		return nil, fmt.Errorf("read audit records: %w", err)
	}
	filter := bson.D{{Key: "owner", Value: owner}, {Key: "minute", Value: bson.D{{Key: "$gte", Value: since}, {Key: "$lt", Value: until}}}}
	var out []AuditBatch
	for i, day := range days {
		if !starts[i].Before(until) || !starts[i].Add(24*time.Hour).After(since) {
			continue
		}
		var docs []auditDoc
		if err := findAll(ctx, s.coll(day), filter, &docs); err != nil {
			return nil, fmt.Errorf("read audit records of %s: %w", day, err)
		}
		for _, d := range docs {
			var recs []AuditRecord
			if err := json.Unmarshal([]byte(d.Records), &recs); err != nil {
				return nil, fmt.Errorf("read audit records of %s: document %s: %w", day, d.ID, err)
			}
			for j := range recs {
				recs[j].Owner, recs[j].Minute = d.Owner, d.Minute.UTC()
			}
			out = append(out, AuditBatch{ID: d.ID, Owner: d.Owner, Minute: d.Minute.UTC(), Records: recs})
		}
	}
	return out, nil
}

// Audit returns owner's stored records with since <= minute < until,
// oldest first (then by key), at most limit of them, each key's counts
// added up.
func (s *Store) Audit(ctx context.Context, owner string, since, until time.Time, limit int) ([]AuditRecord, error) {
	batches, err := s.AuditBatches(ctx, owner, since, until)
	if err != nil {
		return nil, err
	}
	var recs []AuditRecord
	for _, b := range batches {
		recs = append(recs, b.Records...)
	}
	return MergeAudit(recs, limit), nil
}

// PruneAudit deletes the records of minutes before before: the days that
// ended by then are dropped whole, the day it falls in loses its documents
// before it. It returns the days dropped and the documents deleted.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (days int, docs int64, err error) {
	names, starts, err := s.auditDayCollections(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("prune audit records: %w", err)
	}
	for i, day := range names {
		switch {
		case !starts[i].Add(24 * time.Hour).After(before):
			if err := s.coll(day).Drop(ctx); err != nil {
				return days, docs, fmt.Errorf("prune audit records: drop %s: %w", day, err)
			}
			s.auditDays.Delete(day)
			days++
		case starts[i].Before(before):
			res, err := s.coll(day).DeleteMany(ctx, bson.D{{Key: "minute", Value: bson.D{{Key: "$lt", Value: before}}}})
			if err != nil {
				return days, docs, fmt.Errorf("prune audit records of %s: %w", day, err)
			}
			docs += res.DeletedCount
		}
	}
	return days, docs, nil
}

// HasLegacyAudit reports whether the store holds a trail written by an
// earlier Veil (one document per record, in the collection "audit").
func (s *Store) HasLegacyAudit(ctx context.Context) (bool, error) {
	names, err := s.db.ListCollectionNames(ctx, bson.D{{Key: "name", Value: legacyAudit}})
	if err != nil {
		return false, fmt.Errorf("look for audit records to migrate: %w", err)
	}
	return slices.Contains(names, legacyAudit), nil
}

// MigrateLegacyAudit moves a trail written by an earlier Veil into day
// collections, leaving out the records of minutes before before (expired),
// and drops the old collection. It returns the records moved. An
// interrupted migration is simply run again: the moved documents are named
// after their owner and minute, so nothing is stored twice.
func (s *Store) MigrateLegacyAudit(ctx context.Context, before time.Time) (int, error) {
	if ok, err := s.HasLegacyAudit(ctx); err != nil || !ok {
		return 0, err
	}
	var recs []AuditRecord
	if err := findAll(ctx, s.coll(legacyAudit), bson.D{{Key: "minute", Value: bson.D{{Key: "$gte", Value: before}}}}, &recs); err != nil {
		return 0, fmt.Errorf("migrate audit records: read %s: %w", legacyAudit, err)
	}
	type ownerMinute struct {
		owner  string
		minute int64
	}
	byMinute := map[ownerMinute][]AuditRecord{}
	var order []ownerMinute
	moved := 0
	for _, r := range recs {
		r.Stream, r.Purpose = ClipAuditField(r.Stream), ClipAuditField(r.Purpose)
		k := ownerMinute{r.Owner, r.Minute.Unix()}
		if _, ok := byMinute[k]; !ok {
			order = append(order, k)
		}
		byMinute[k] = append(byMinute[k], r)
		moved++
	}
	var batches []AuditBatch
	for _, k := range order {
		// Merged and sorted: a retried migration writes the same documents.
		merged := MergeAudit(byMinute[k], 0)
		for part := 0; part*MaxAuditBatch < len(merged); part++ {
			minute := time.Unix(k.minute, 0).UTC()
			batches = append(batches, AuditBatch{ID: AuditBatchID(k.owner, minute, "legacy", int64(part)), Owner: k.owner,
				Minute: minute, Records: merged[part*MaxAuditBatch : min(len(merged), (part+1)*MaxAuditBatch)]})
		}
	}
	if err := s.AddAudit(ctx, batches); err != nil {
		return 0, fmt.Errorf("migrate audit records: %w", err)
	}
	if err := s.coll(legacyAudit).Drop(ctx); err != nil {
		return moved, fmt.Errorf("migrate audit records: drop %s: %w", legacyAudit, err)
	}
	return moved, nil
}

// MergeAudit adds up records of the same key and returns them oldest first
// (then by key), at most limit of them (limit <= 0: all).
func MergeAudit(records []AuditRecord, limit int) []AuditRecord {
	byKey := make(map[auditKey]int, len(records))
	var out []AuditRecord
	for _, r := range records {
		k := keyOf(&r)
		if i, ok := byKey[k]; ok {
			out[i].Count += r.Count
			continue
		}
		byKey[k] = len(out)
		r.Minute = r.Minute.UTC()
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b AuditRecord) int {
		ka, kb := keyOf(&a), keyOf(&b)
		return ka.compare(&kb)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// auditKey identifies what a record counts: records with the same key are
// one aggregate, however many documents hold it. A struct, not the fields
// joined by a separator: the stream and the purpose come from clients and
// may hold any separator, and a joined key made two different records (a
// denied read and a denied command) one.
type auditKey struct {
	minute                                     int64
	owner, who, thing, stream, action, purpose string
	effect, rule, policy, policyOwner          string
}

func keyOf(r *AuditRecord) auditKey {
	return auditKey{minute: r.Minute.Unix(), owner: r.Owner, who: r.Who, thing: r.Thing, stream: r.Stream, action: r.Action,
		purpose: r.Purpose, effect: r.Effect, rule: r.Rule, policy: r.Policy, policyOwner: r.PolicyOwner}
}

// compare orders keys by minute, then field by field. The order is total
// over distinct keys, so a merge of the same records always comes out the
// same (a retried migration writes the same documents).
func (k *auditKey) compare(o *auditKey) int {
	return cmp.Or(cmp.Compare(k.minute, o.minute), strings.Compare(k.owner, o.owner), strings.Compare(k.who, o.who),
		strings.Compare(k.thing, o.thing), strings.Compare(k.stream, o.stream), strings.Compare(k.action, o.action),
		strings.Compare(k.purpose, o.purpose), strings.Compare(k.effect, o.effect), strings.Compare(k.rule, o.rule),
		strings.Compare(k.policy, o.policy), strings.Compare(k.policyOwner, o.policyOwner))
}
