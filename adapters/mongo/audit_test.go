package mongo

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/bson"
)

// doctorRead is one record of the doctor reading an's watch.
func doctorRead(minute time.Time, count int64) AuditRecord {
	return AuditRecord{Owner: "an", Minute: minute, Who: "doctor", Thing: "watch-1", Stream: "location", Action: "read",
		Purpose: "diagnosis", Effect: "constrained", Rule: "policy", Policy: "doctor-location", PolicyOwner: "an", Count: count}
}

func batch(writer string, n int64, recs ...AuditRecord) AuditBatch {
	return AuditBatch{ID: AuditBatchID(recs[0].Owner, recs[0].Minute, writer, n), Owner: recs[0].Owner, Minute: recs[0].Minute, Records: recs}
}

// auditDays lists the day collections of st.
func auditDays(t *testing.T, st *Store) []string {
	t.Helper()
	days, _, err := st.auditDayCollections(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return days
}

func counts(t *testing.T, st *Store, owner string, since, until time.Time) []int64 {
	t.Helper()
	recs, err := st.Audit(context.Background(), owner, since, until, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := []int64{}
	for _, r := range recs {
		out = append(out, r.Count)
	}
	return out
}

// A minute's records land in their UTC day's collection; a query reads the
// days its range covers and adds up each key's counts over writers; a
// retried batch is stored once; owners see only their own records.
func TestAuditStoredByDay(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	late := time.Date(2026, 11, 25, 23, 59, 0, 0, time.UTC)
	early := late.Add(time.Minute) // 2026-11-26 00:00
	peter := doctorRead(late, 7)
	peter.Owner, peter.PolicyOwner = "peter", "peter"
	for _, w := range []struct {
		name    string
		batches []AuditBatch
	}{
		{"run a", []AuditBatch{batch("run-a", 1, doctorRead(late, 3))}},
		{"run b, two days", []AuditBatch{batch("run-b", 1, doctorRead(late, 3)), batch("run-b", 2, doctorRead(early, 1)), batch("run-b", 3, peter)}},
		{"run b retried", []AuditBatch{batch("run-b", 1, doctorRead(late, 3)), batch("run-b", 2, doctorRead(early, 1))}},
	} {
		if err := st.AddAudit(ctx, w.batches); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
	}
	if got, want := auditDays(t, st), []string{"audit.2026-11-25", "audit.2026-11-26"}; !slices.Equal(got, want) {
		t.Errorf("day collections %v, want %v", got, want)
	}
	for _, q := range []struct {
		name         string
		owner        string
		since, until time.Time
		want         []int64
	}{
		{"both days", "an", late, early.Add(time.Minute), []int64{6, 1}},
		{"the first day", "an", late, early, []int64{6}},
		{"the second day", "an", early, early.Add(time.Hour), []int64{1}},
		{"before anything", "an", late.Add(-time.Hour), late, []int64{}},
		{"another owner", "peter", late, early.Add(time.Minute), []int64{7}},
		{"nobody's", "stranger", late, early.Add(time.Minute), []int64{}},
	} {
		if got := counts(t, st, q.owner, q.since, q.until); !slices.Equal(got, q.want) {
			t.Errorf("%s: counts %v, want %v", q.name, got, q.want)
		}
	}
	recs, err := st.Audit(ctx, "an", late, early, 0)
	if err != nil || len(recs) != 1 {
		t.Fatalf("Audit = %+v, %v", recs, err)
	}
	if want := doctorRead(late, 6); recs[0] != want {
		t.Errorf("record %+v, want %+v", recs[0], want)
	}
}

// A batch is 1 to MaxAuditBatch records; a bad one is refused by name and
// nothing of its write is stored.
func TestAuditRefusesBadBatches(t *testing.T) {
	st := open(t)
	minute := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	good := batch("w", 1, doctorRead(minute, 1))
	big := batch("w", 2, slices.Repeat([]AuditRecord{doctorRead(minute, 1)}, MaxAuditBatch+1)...)
	empty := AuditBatch{ID: AuditBatchID("an", minute, "w", 3), Owner: "an", Minute: minute}
	for _, bad := range []AuditBatch{big, empty} {
		err := st.AddAudit(context.Background(), []AuditBatch{good, bad})
		if err == nil || !strings.Contains(err.Error(), bad.ID) {
			t.Errorf("AddAudit with %d records: %v, want an error naming %s", len(bad.Records), err, bad.ID)
		}
	}
	if got := counts(t, st, "an", minute, minute.Add(time.Minute)); len(got) != 0 {
		t.Errorf("stored %v after refused writes", got)
	}
}

// A prune drops the days that ended before its bound and deletes the
// documents before it from the day it falls in; later ones stay.
func TestAuditPruneDropsDays(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	at := func(day, hh int) time.Time { return time.Date(2026, 11, day, hh, 0, 0, 0, time.UTC) }
	var batches []AuditBatch
	for i, m := range []time.Time{at(24, 10), at(25, 10), at(26, 9), at(26, 11), at(26, 12), at(27, 1)} {
		batches = append(batches, batch("w", int64(i), doctorRead(m, int64(i+1))))
	}
	if err := st.AddAudit(ctx, batches); err != nil {
		t.Fatal(err)
	}
	days, docs, err := st.PruneAudit(ctx, at(26, 12))
	if err != nil || days != 2 || docs != 2 {
		t.Fatalf("PruneAudit = %d days, %d documents, %v; want 2 days (24th, 25th), 2 documents (09:00, 11:00)", days, docs, err)
	}
	if got, want := auditDays(t, st), []string{"audit.2026-11-26", "audit.2026-11-27"}; !slices.Equal(got, want) {
		t.Errorf("day collections %v, want %v", got, want)
	}
	if got := counts(t, st, "an", at(20, 0), at(28, 0)); !slices.Equal(got, []int64{5, 6}) {
		t.Errorf("counts after the prune %v, want [5 6] (12:00 on the 26th, 01:00 on the 27th)", got)
	}
	// A day dropped and written again gets its index again.
	if err := st.AddAudit(ctx, []AuditBatch{batch("w", 9, doctorRead(at(25, 10), 9))}); err != nil {
		t.Fatal(err)
	}
	if got := counts(t, st, "an", at(25, 0), at(26, 0)); !slices.Equal(got, []int64{9}) {
		t.Errorf("counts of the 25th written again: %v", got)
	}
}

// A trail written by an earlier Veil (a document per record and writer in
// "audit", expiring at expire_at) moves into day collections, merged per
// key, without the expired records; the old collection is dropped. Run
// again over the same documents (a migration interrupted before its drop),
// it stores nothing twice.
func TestMigrateLegacyAudit(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	minute := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	legacy := func(r AuditRecord, writer string) bson.D {
		return bson.D{
			{Key: "_id", Value: fmt.Sprintf("%s|%d|%s|%s", r.Owner, r.Minute.Unix(), r.Who, writer)},
			{Key: "owner", Value: r.Owner}, {Key: "minute", Value: r.Minute}, {Key: "who", Value: r.Who},
			{Key: "thing", Value: r.Thing}, {Key: "stream", Value: r.Stream}, {Key: "action", Value: r.Action},
			{Key: "purpose", Value: r.Purpose}, {Key: "effect", Value: r.Effect}, {Key: "rule", Value: r.Rule},
			{Key: "policy", Value: r.Policy}, {Key: "policy_owner", Value: r.PolicyOwner},
			{Key: "count", Value: r.Count}, {Key: "expire_at", Value: r.Minute.Add(90 * 24 * time.Hour)},
		}
	}
	visitor := doctorRead(minute.Add(time.Minute), 5)
	visitor.Who, visitor.Effect, visitor.Rule, visitor.Policy = "zoe", "allow", "visitor", ""
	docs := []any{
		legacy(doctorRead(minute, 3), "run-a"), legacy(doctorRead(minute, 4), "run-b"), legacy(visitor, "run-b"),
		legacy(doctorRead(minute.Add(-48*time.Hour), 2), "run-a"), // expired by the migration's bound
	}
	if has, err := st.HasLegacyAudit(ctx); err != nil || has {
		t.Fatalf("a fresh store has a legacy trail: %v, %v", has, err)
	}
	for run := 1; run <= 2; run++ {
		if _, err := st.coll(legacyAudit).InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		n, err := st.MigrateLegacyAudit(ctx, minute.Add(-24*time.Hour))
		if err != nil || n != 3 {
			t.Fatalf("run %d: MigrateLegacyAudit = %d, %v; want 3 records", run, n, err)
		}
		if has, err := st.HasLegacyAudit(ctx); err != nil || has {
			t.Fatalf("run %d: legacy trail still there: %v, %v", run, has, err)
		}
		recs, err := st.Audit(ctx, "an", minute.Add(-72*time.Hour), minute.Add(time.Hour), 0)
		if err != nil || len(recs) != 2 || recs[0] != doctorRead(minute, 7) || recs[1] != visitor {
			t.Fatalf("run %d: migrated records %+v, %v; want the doctor's 7 and the visitor's 5", run, recs, err)
		}
	}
	if n, err := st.MigrateLegacyAudit(ctx, minute); err != nil || n != 0 {
		t.Fatalf("without a legacy trail: %d, %v", n, err)
	}
}

// BenchmarkAuditQueryHour is one owner's one-hour query with 7 days of
// records stored, a document of 10 records per minute: it reads one day.
func BenchmarkAuditQueryHour(b *testing.B) {
	st := open(b)
	ctx := context.Background()
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	var batches []AuditBatch
	for m := range 7 * 24 * 60 {
		minute := start.Add(time.Duration(m) * time.Minute)
		recs := make([]AuditRecord, 10)
		for i := range recs {
			recs[i] = doctorRead(minute, int64(i+1))
			recs[i].Stream = fmt.Sprintf("stream-%d", i)
		}
		batches = append(batches, batch("w", int64(m), recs...))
		if len(batches) == 1440 {
			if err := st.AddAudit(ctx, batches); err != nil {
				b.Fatal(err)
			}
			batches = nil
		}
	}
	since := start.Add(6*24*time.Hour + 12*time.Hour)
	b.ResetTimer()
	for b.Loop() {
		recs, err := st.Audit(ctx, "an", since, since.Add(time.Hour), 0)
		if err != nil || len(recs) != 600 {
			b.Fatalf("Audit = %d records, %v; want 600", len(recs), err)
		}
	}
}

func TestClipAuditField(t *testing.T) {
	for _, c := range []struct {
		name, in string
		wantLen  int
	}{
		{"short", "diagnosis", 9},
		{"at the bound", strings.Repeat("p", MaxAuditField), MaxAuditField},
		{"long", strings.Repeat("p", 300_000), MaxAuditField},
		{"cut inside a rune", strings.Repeat("ü", 200), MaxAuditField - 1}, // 2-byte runes: 253 bytes hold 126 of them
	} {
		got := ClipAuditField(c.in)
		if len(got) != c.wantLen || !utf8.ValidString(got) {
			t.Errorf("%s: %d bytes (valid UTF-8 %v), want %d", c.name, len(got), utf8.ValidString(got), c.wantLen)
		}
		if len(c.in) > MaxAuditField && (!strings.HasSuffix(got, "…") || !strings.HasPrefix(c.in, strings.TrimSuffix(got, "…"))) {
			t.Errorf("%s: %q is not a marked prefix", c.name, got)
		}
		if len(c.in) <= MaxAuditField && got != c.in {
			t.Errorf("%s: changed to %q", c.name, got)
		}
	}
}
