package broker_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// The audit trail against the real metadata store: counts go live every
// flush, a minute is written once it is over (one document per key, never
// updated), queries include what is not written yet, Close writes the rest,
// and a restarted broker's counts for the same minute add up.
func TestAuditWritesFinishedMinutes(t *testing.T) {
	ctx := context.Background()
	const owner = "audit-minutes-owner"
	at := &testClock{}
	at.Set(time.Date(2026, 11, 25, 12, 0, 10, 0, time.UTC))
	var mu sync.Mutex
	live := map[string]int64{}
	newAudit := func() *hooks.Audit {
		return hooks.NewAudit(hooks.AuditConfig{Store: veil.Store, Clock: at, Log: zerolog.Nop(), Retention: time.Hour,
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
			a.Record(doctor, policies.ActRead, "care", read)
		}
	}
	minute := func(hhmm string) time.Time {
		m, _ := time.Parse("15:04", hhmm)
		return time.Date(2026, 11, 25, m.Hour(), m.Minute(), 0, 0, time.UTC)
	}
	stored := func(hhmm string) int64 {
		t.Helper()
		recs, err := veil.Store.Audit(ctx, owner, minute(hhmm), minute(hhmm).Add(time.Minute), 0)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, r := range recs {
			n += r.Count
		}
		return n
	}
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
