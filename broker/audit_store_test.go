package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/broker"
	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// The audit trail against the real metadata store: counts go live every
// flush, a minute is written once it is over (one document per owner and
// minute, never updated), queries include what is not written yet, Close
// writes the rest, and a restarted broker's counts for the same minute add
// up.
func TestAuditWritesFinishedMinutes(t *testing.T) {
	st := broker.EmptyStore(t) // its own: a prune drops whole days
	ctx := context.Background()
	const owner = "audit-minutes-owner"
	at := &testClock{}
	at.Set(time.Date(2026, 11, 25, 12, 0, 10, 0, time.UTC))
	var mu sync.Mutex
	live := map[string]int64{}
	newAudit := func() *hooks.Audit {
		return hooks.NewAudit(hooks.AuditConfig{Store: st, Clock: at, Log: zerolog.Nop(), Retention: time.Hour,
			Publish: func(o string, payload []byte) {
				var got struct{ Records []mongo.AuditRecord }
				if err := json.Unmarshal(payload, &got); err != nil || o != owner {
					t.Errorf("live audit to %s: %s (%v)", o, payload, err)
				}
				mu.Lock()
				for _, r := range got.Records {
					live[r.Minute.Format("15:04")] += r.Count
				}
				mu.Unlock()
			}})
	}
	doctor := policies.UserPrincipal("audit-doctor")
	read := policies.Decision{Effect: policies.Allow, Rule: "policy", PolicyID: "p", PolicyOwner: owner, Owner: owner,
		Thing: "audit-thermo", Stream: "temperature"}
	record := func(a *hooks.Audit, n int) {
		for range n {
			a.Record(doctor, policies.ActRead, "care", &read, 1)
		}
	}
	minute := func(hhmm string) time.Time {
		m, _ := time.Parse("15:04", hhmm)
		return time.Date(2026, 11, 25, m.Hour(), m.Minute(), 0, 0, time.UTC)
	}
	stored := func(hhmm string) int64 { t.Helper(); return storedCount(t, st, owner, minute(hhmm)) }
	queried := func(a *hooks.Audit, hhmm string) int64 {
		t.Helper()
		recs, err := a.Query(ctx, owner, minute(hhmm), minute(hhmm).Add(time.Minute), 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 1 {
			t.Fatalf("one key, %d records: %+v", len(recs), recs)
		}
		if len(recs) == 0 {
			return 0
		}
		return recs[0].Count
	}
	check := func(step string, a *hooks.Audit, hhmm string, wantLive, wantStored, wantQueried int64) {
		t.Helper()
		mu.Lock()
		l := live[hhmm]
		mu.Unlock()
		if l != wantLive || stored(hhmm) != wantStored || queried(a, hhmm) != wantQueried {
			t.Errorf("%s, minute %s: live %d, stored %d, queried %d; want %d, %d, %d", step, hhmm,
				l, stored(hhmm), queried(a, hhmm), wantLive, wantStored, wantQueried)
		}
	}

	a := newAudit()
	record(a, 3)
	check("before any flush", a, "12:00", 0, 0, 3)
	a.Flush(ctx)
	check("first flush", a, "12:00", 3, 0, 3)
	record(a, 2)
	at.Set(minute("12:00").Add(50 * time.Second))
	a.Flush(ctx)
	check("second flush in the minute", a, "12:00", 5, 0, 5)
	at.Set(minute("12:01").Add(6 * time.Second))
	record(a, 1)
	a.Flush(ctx)
	check("after the minute", a, "12:00", 5, 5, 5)
	check("after the minute", a, "12:01", 1, 0, 1)
	a.Flush(ctx) // nothing new: nothing written twice
	check("idle flush", a, "12:00", 5, 5, 5)
	a.Close()
	check("closed", a, "12:01", 1, 1, 1)

	// The broker restarts within the same minute.
	b := newAudit()
	record(b, 4)
	check("restarted", b, "12:01", 1, 1, 5)
	b.Close()
	check("restarted and closed", b, "12:01", 5, 5, 5)
}

// Expired records are pruned every ten minutes, the first time ten minutes
// after the start, not at it. A failed prune is not retried before the next
// interval. Records not expired stay.
func TestAuditPrunesOneIntervalAfterTheStart(t *testing.T) {
	st := broker.EmptyStore(t) // its own: a prune drops whole days
	ctx := context.Background()
	const owner = "audit-prune-owner"
	at := &testClock{}
	day := func(hh, mm, ss int) time.Time { return time.Date(2026, 11, 27, hh, mm, ss, 0, time.UTC) }
	newAudit := func() *hooks.Audit {
		return hooks.NewAudit(hooks.AuditConfig{Store: st, Clock: at, Log: zerolog.Nop(), Retention: time.Hour})
	}
	read := policies.Decision{Effect: policies.Allow, Rule: "policy", PolicyID: "p", PolicyOwner: owner, Owner: owner,
		Thing: "audit-prune-thermo", Stream: "temperature"}
	doctor := policies.UserPrincipal("audit-prune-doctor")
	stored := func(from time.Time) int64 { t.Helper(); return storedCount(t, st, owner, from) }

	at.Set(day(9, 0, 10))
	a := newAudit()
	a.Record(doctor, policies.ActRead, "care", &read, 1)
	a.Record(doctor, policies.ActRead, "care", &read, 1)
	at.Set(day(9, 1, 6))
	a.Close() // 09:00's two, expiring at 10:00
	if n := stored(day(9, 0, 0)); n != 2 {
		t.Fatalf("09:00 stored %d, want 2", n)
	}

	// A restart long after they expired.
	at.Set(day(10, 5, 0))
	b := newAudit()
	defer b.Close()
	b.Record(doctor, policies.ActRead, "care", &read, 1) // 10:05, expiring at 11:05
	down, cancel := context.WithCancel(ctx)
	cancel() // a flush whose store calls all fail
	for _, step := range []struct {
		name     string
		now      time.Time
		ctx      context.Context
		want0900 int64
		want1005 int64
	}{
		{"flush at the start", day(10, 5, 1), ctx, 2, 0},
		{"9 minutes 59 after the start", day(10, 14, 59), ctx, 2, 1},
		{"10 minutes after the start, the store unreachable", day(10, 15, 0), down, 2, 1},
		{"a second later: a failed prune waits for the next interval", day(10, 15, 1), ctx, 2, 1},
		{"20 minutes after the start", day(10, 25, 0), ctx, 0, 1},
	} {
		at.Set(step.now)
		b.Flush(step.ctx)
		if got0900, got1005 := stored(day(9, 0, 0)), stored(day(10, 5, 0)); got0900 != step.want0900 || got1005 != step.want1005 {
			t.Errorf("%s: stored 09:00 %d, 10:05 %d; want %d, %d", step.name, got0900, got1005, step.want0900, step.want1005)
		}
	}
}

// While the store is down, a finished minute's batch is kept and written
// later as it was; a query in between counts it once; a count that arrives
// for a minute already batched goes into a batch of its own and adds up.
func TestAuditKeepsBatchesWhileTheStoreIsDown(t *testing.T) {
	f := newAuditFixture(t, "")
	ctx := context.Background()
	const owner = "audit-outage-owner"
	minute := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	read := policies.Decision{Effect: policies.Allow, Rule: "policy", PolicyID: "p", PolicyOwner: owner, Owner: owner,
		Thing: "audit-outage-thermo", Stream: "temperature"}
	doctor := policies.UserPrincipal("audit-outage-doctor")
	counts := func() (stored, queried int64) {
		t.Helper()
		recs := f.queried(t, owner, minute)
		if len(recs) > 1 {
			t.Fatalf("one key, %d records: %+v", len(recs), recs)
		}
		if len(recs) == 1 {
			queried = recs[0].Count
		}
		return storedCount(t, f.st, owner, minute), queried
	}

	f.at.Set(minute.Add(10 * time.Second))
	f.audit.Record(doctor, policies.ActRead, "care", &read, 1)
	f.audit.Record(doctor, policies.ActRead, "care", &read, 1)
	f.at.Set(minute.Add(66 * time.Second))
	f.audit.Flush(f.down)
	if s, q := counts(); s != 0 || q != 2 {
		t.Fatalf("store down: stored %d, queried %d; want 0, 2", s, q)
	}
	f.at.Set(minute.Add(59 * time.Second)) // a decision counted late, for the minute already batched
	f.audit.Record(doctor, policies.ActRead, "care", &read, 1)
	f.at.Set(minute.Add(67 * time.Second))
	f.audit.Flush(ctx)
	if s, q := counts(); s != 3 || q != 3 {
		t.Fatalf("store back: stored %d, queried %d; want 3, 3", s, q)
	}
	f.audit.Flush(ctx)
	f.audit.Close()
	if s := storedCount(t, f.st, owner, minute); s != 3 {
		t.Fatalf("after more flushes: stored %d, want 3", s)
	}
}

// A batch that landed although its write reported an error (a write that
// partly landed) is counted once by queries and stored once by the retry.
func TestAuditCountsAPartlyStoredBatchOnce(t *testing.T) {
	f := newAuditFixture(t, "w")
	ctx := context.Background()
	const owner = "audit-partial-owner"
	minute := time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC)
	read := policies.Decision{Effect: policies.Allow, Rule: "policy", PolicyID: "p", PolicyOwner: owner, Owner: owner,
		Thing: "audit-partial-thermo", Stream: "temperature"}
	f.at.Set(minute.Add(10 * time.Second))
	f.audit.Record(policies.UserPrincipal("audit-partial-doctor"), policies.ActRead, "care", &read, 1)
	f.audit.Record(policies.UserPrincipal("audit-partial-doctor"), policies.ActRead, "care", &read, 1)
	f.at.Set(minute.Add(66 * time.Second))
	f.audit.Flush(f.down)
	// The write that failed had stored its batch after all.
	landed := mongo.AuditRecord{Owner: owner, Minute: minute, Who: "audit-partial-doctor", Thing: "audit-partial-thermo",
		Stream: "temperature", Action: "read", Purpose: "care", Effect: "allow", Rule: "policy", Policy: "p", PolicyOwner: owner, Count: 2}
	if err := f.st.AddAudit(ctx, []mongo.AuditBatch{{ID: mongo.AuditBatchID(owner, minute, "w", 1), Owner: owner, Minute: minute,
		Records: []mongo.AuditRecord{landed}}}); err != nil {
		t.Fatal(err)
	}
	if recs := f.queried(t, owner, minute); len(recs) != 1 || recs[0] != landed {
		t.Fatalf("Query = %+v; want the 2 counted once: %+v", recs, landed)
	}
	f.audit.Flush(ctx)
	f.audit.Close()
	if n := storedCount(t, f.st, owner, minute); n != 2 {
		t.Fatalf("stored %d after the retry, want 2", n)
	}
}

// A minute with more records for one owner than a batch holds is stored in
// several batches; a client's overlong purpose is cut, not refused.
func TestAuditSplitsBatchesAndClipsFields(t *testing.T) {
	f := newAuditFixture(t, "")
	const owner = "audit-split-owner"
	minute := time.Date(2026, 11, 28, 14, 0, 0, 0, time.UTC)
	read := policies.Decision{Effect: policies.Deny, Rule: "default", Owner: owner, Thing: "audit-split-thermo", Stream: "temperature"}
	f.at.Set(minute.Add(10 * time.Second))
	long := strings.Repeat("p", 300_000)
	n := mongo.MaxAuditBatch + 1
	for i := range n {
		f.audit.Record(policies.UserPrincipal(fmt.Sprintf("audit-split-%d", i)), policies.ActRead, long, &read, 1)
	}
	f.at.Set(minute.Add(66 * time.Second))
	f.audit.Close()
	batches, err := f.st.AuditBatches(context.Background(), owner, minute, minute.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	records := 0
	for _, b := range batches {
		records += len(b.Records)
		for _, r := range b.Records {
			if len(r.Purpose) != mongo.MaxAuditField || !strings.HasSuffix(r.Purpose, "…") {
				t.Fatalf("stored purpose of %d bytes, want %d ending in …", len(r.Purpose), mongo.MaxAuditField)
			}
		}
	}
	if len(batches) != 2 || records != n {
		t.Fatalf("%d batches holding %d records, want 2 holding %d", len(batches), records, n)
	}
}

// While the store is down the finished minutes kept for a retry are
// bounded (100,000 records): past the bound the oldest batches go. (The
// rest is counted by queries; that they are stored once the store is back
// is TestAuditKeepsBatchesWhileTheStoreIsDown's, at a size the embedded
// store writes in a test's time.)
func TestAuditBacklogIsBounded(t *testing.T) {
	f := newAuditFixture(t, "")
	const owner = "audit-backlog-owner"
	first := time.Date(2026, 11, 28, 15, 0, 0, 0, time.UTC)
	read := policies.Decision{Effect: policies.Deny, Rule: "default", Owner: owner, Thing: "audit-backlog-thermo", Stream: "temperature"}
	// Minute one: 2,000 records (one batch); minute two: 99,000 (50 batches).
	for minute, n := range []int{mongo.MaxAuditBatch, 99_000} {
		f.at.Set(first.Add(time.Duration(minute)*time.Minute + 10*time.Second))
		for i := range n {
			f.audit.Record(policies.UserPrincipal(fmt.Sprintf("audit-backlog-%d", i)), policies.ActRead, "", &read, 1)
		}
		f.at.Set(first.Add(time.Duration(minute+1)*time.Minute + 6*time.Second))
		f.audit.Flush(f.down)
	}
	if one, two := len(f.queried(t, owner, first)), len(f.queried(t, owner, first.Add(time.Minute))); one != 0 || two != 99_000 {
		t.Fatalf("%d records of minute one and %d of minute two kept; want 0 (dropped, the oldest) and 99,000", one, two)
	}
}

// A trail stored by an earlier Veil, one document per record in the
// collection "audit", is moved into day collections when the audit starts:
// its records are queried as before, the expired ones are gone.
func TestAuditStartMigratesTheLegacyTrail(t *testing.T) {
	st := broker.EmptyStore(t) // its own: a prune drops whole days
	ctx := context.Background()
	const owner = "audit-legacy-owner"
	at := &testClock{}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	at.Set(now)
	legacy := st.Database().Collection("audit")
	doc := func(id string, minute time.Time, count int64) bson.D {
		return bson.D{{Key: "_id", Value: id}, {Key: "owner", Value: owner}, {Key: "minute", Value: minute},
			{Key: "who", Value: "audit-legacy-doctor"}, {Key: "thing", Value: "audit-legacy-thermo"}, {Key: "stream", Value: "temperature"},
			{Key: "action", Value: "read"}, {Key: "effect", Value: "allow"}, {Key: "rule", Value: "policy"}, {Key: "policy", Value: "p"},
			{Key: "policy_owner", Value: owner}, {Key: "count", Value: count}, {Key: "expire_at", Value: minute.Add(24 * time.Hour)}}
	}
	if _, err := legacy.InsertMany(ctx, []any{
		doc("kept|a", now.Add(-time.Hour), 4), doc("kept|b", now.Add(-time.Hour), 5), doc("expired|a", now.Add(-25*time.Hour), 6),
	}); err != nil {
		t.Fatal(err)
	}
	a := hooks.NewAudit(hooks.AuditConfig{Store: st, Clock: at, Log: zerolog.Nop(), Retention: 24 * time.Hour})
	a.Start(time.Hour)
	defer a.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		has, err := st.HasLegacyAudit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !has {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the legacy trail is still there 10 s after the start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := storedCount(t, st, owner, now.Add(-time.Hour)); n != 9 {
		t.Errorf("migrated minute holds %d, want 9", n)
	}
	if n := storedCount(t, st, owner, now.Add(-25*time.Hour)); n != 0 {
		t.Errorf("expired minute holds %d, want 0", n)
	}
	recs, err := a.Query(ctx, owner, now.Add(-2*time.Hour), now, 0)
	if err != nil || len(recs) != 1 || recs[0].Count != 9 {
		t.Errorf("Query = %+v, %v; want one record of 9", recs, err)
	}
}

// auditFixture is an audit trail on a metadata store of its own (a prune
// drops whole days, which would reach into other tests' records), with its
// clock and a context whose store calls all fail: the store down.
type auditFixture struct {
	st    *mongo.Store
	audit *hooks.Audit
	at    *testClock
	down  context.Context
}

func newAuditFixture(t *testing.T, writer string) auditFixture {
	t.Helper()
	st := broker.EmptyStore(t)
	at := &testClock{}
	down, cancel := context.WithCancel(context.Background())
	cancel()
	a := hooks.NewAudit(hooks.AuditConfig{Store: st, Clock: at, Log: zerolog.Nop(), Retention: time.Hour, Writer: writer})
	return auditFixture{st: st, audit: a, at: at, down: down}
}

// queried returns owner's records, stored or not yet, of the minute from.
func (f auditFixture) queried(t *testing.T, owner string, from time.Time) []mongo.AuditRecord {
	t.Helper()
	recs, err := f.audit.Query(context.Background(), owner, from, from.Add(time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// storedCount is the count owner's stored records hold for the minute from.
func storedCount(t *testing.T, st *mongo.Store, owner string, from time.Time) int64 {
	t.Helper()
	recs, err := st.Audit(context.Background(), owner, from, from.Add(time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, r := range recs {
		n += r.Count
	}
	return n
}
