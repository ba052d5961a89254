package mongo_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/veil-iot/veil/adapters/mongo"
)

// TestAuditMergeKeepsDistinctRecordsApart: a record's stream and purpose
// are chosen by clients (the topic, a user property) and may hold any
// separator, so two different records of one owner and minute must never
// be added up as one (mallory's denied read shown as a command, or gone).
func TestAuditMergeKeepsDistinctRecordsApart(t *testing.T) {
	m := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	read := mongo.AuditRecord{Owner: "an", Minute: m, Who: "mallory", Thing: "lock-1", Stream: "battery", Action: "read", Purpose: "x|command|", Effect: "deny", Rule: "default", Count: 1}
	cmd := mongo.AuditRecord{Owner: "an", Minute: m, Who: "mallory", Thing: "lock-1", Stream: "battery|read|x", Action: "command", Effect: "deny", Rule: "default", Count: 1}
	if got := mongo.MergeAudit([]mongo.AuditRecord{read, cmd}, 0); len(got) != 2 {
		t.Fatalf("merged into %d: %+v", len(got), got)
	}
}

// TestAuditMergeAddsUpEqualRecords: records equal but for their count are
// one, whatever separators their fields hold; any field differing keeps
// them apart. Oldest first, then by the fields in order.
func TestAuditMergeAddsUpEqualRecords(t *testing.T) {
	m := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	base := mongo.AuditRecord{Owner: "an", Minute: m, Who: "doctor", Thing: "watch-1", Stream: "loc|read|ation", Action: "read",
		Purpose: "dia|gnosis", Effect: "constrained", Rule: "policy", Policy: "p|1", PolicyOwner: "an", Count: 2}
	for _, c := range []struct {
		name   string
		change func(r *mongo.AuditRecord)
		want   []int64 // counts after the merge, in order
	}{
		{"equal", func(r *mongo.AuditRecord) { r.Count = 3 }, []int64{5}},
		{"same minute in another zone", func(r *mongo.AuditRecord) { r.Minute = m.In(time.FixedZone("x", 3600)) }, []int64{4}},
		{"owner", func(r *mongo.AuditRecord) { r.Owner = "an|" }, []int64{2, 2}},
		{"minute", func(r *mongo.AuditRecord) { r.Minute = m.Add(-time.Minute); r.Count = 1 }, []int64{1, 2}},
		{"who", func(r *mongo.AuditRecord) { r.Who = "doctor|watch-1" }, []int64{2, 2}},
		{"stream into purpose", func(r *mongo.AuditRecord) { r.Stream, r.Purpose = "loc", "ation|read|dia|gnosis" }, []int64{2, 2}},
		{"policy into policy owner", func(r *mongo.AuditRecord) { r.Policy, r.PolicyOwner = "p", "1|an" }, []int64{2, 2}},
		{"effect", func(r *mongo.AuditRecord) { r.Effect = "allow" }, []int64{2, 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			other := base
			c.change(&other)
			got := mongo.MergeAudit([]mongo.AuditRecord{base, other}, 0)
			var counts []int64
			for _, r := range got {
				counts = append(counts, r.Count)
			}
			if !slices.Equal(counts, c.want) {
				t.Fatalf("counts %v, want %v: %+v", counts, c.want, got)
			}
		})
	}
}

// TestAuditBatchIDsDistinct: an owner's name may hold "|" (the engine
// refuses only "/+#" and NUL), yet batches of different owners, minutes
// or numbers never share an id (a shared id drops a batch as stored).
func TestAuditBatchIDsDistinct(t *testing.T) {
	m := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	seen := map[string]string{}
	for _, owner := range []string{"an", "an|", "an|29", "an|29|w", "an|29|w|1", "|"} {
		for _, minute := range []time.Time{m, m.Add(time.Minute)} {
			for _, n := range []int64{1, 2, 12} {
				id := mongo.AuditBatchID(owner, minute, "w", n)
				what := fmt.Sprintf("%q %s %d", owner, minute, n)
				if prev, ok := seen[id]; ok {
					t.Fatalf("%s and %s share the id %q", prev, what, id)
				}
				seen[id] = what
			}
		}
	}
}
