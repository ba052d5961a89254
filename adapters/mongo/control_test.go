package mongo

import (
	"context"
	"testing"
	"time"
)

func TestInvitationLifecycle(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	inv := Invitation{ID: "abc", Invitee: "ruth", Object: "thing:lock-1", Thing: "lock-1", Relation: "visitor", Inviter: "peter",
		ValidUntil: "2026-11-25T23:00:00Z", Created: now, Expires: now.Add(7 * 24 * time.Hour), Status: "pending"}
	if err := st.PutInvitation(ctx, inv); err != nil {
		t.Fatal(err)
	}
	got, ok, err := st.Invitation(ctx, "abc")
	if err != nil || !ok || got != inv {
		t.Fatalf("Invitation = %+v, %v, %v", got, ok, err)
	}
	if _, ok, _ := st.Invitation(ctx, "nope"); ok {
		t.Fatal("an unknown invitation was found")
	}
	tests := []struct {
		from, to string
		want     bool
	}{
		{"pending", "accepted", true},
		{"pending", "declined", false}, // already answered: exactly one answer wins
		{"accepted", "pending", true},  // undo of a failed acceptance
	}
	for _, tc := range tests {
		changed, err := st.SetInvitationStatus(ctx, "abc", tc.from, tc.to)
		if err != nil || changed != tc.want {
			t.Fatalf("%s → %s: %v, %v; want %v", tc.from, tc.to, changed, err, tc.want)
		}
	}
	pending, err := st.Invitations(ctx, "pending")
	if err != nil || len(pending) != 1 {
		t.Fatalf("pending invitations %v, %v", pending, err)
	}
	for i, tr := range []Transition{{At: now, Object: "thing:lock-1", User: "ruth", Relation: "visitor", To: "pending", By: "peter"},
		{At: now.Add(time.Minute), Object: "thing:lock-1", User: "ruth", Relation: "visitor", From: "pending", To: "active", By: "ruth"}} {
		if err := st.RecordTransition(ctx, tr); err != nil {
			t.Fatalf("transition %d: %v", i, err)
		}
	}
	trs, err := st.Transitions(ctx, "thing:lock-1")
	if err != nil || len(trs) != 2 || trs[1].To != "active" {
		t.Fatalf("transitions %+v, %v", trs, err)
	}
}

func TestFactoryEnrolsOnce(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	if err := st.PutFactory(ctx, FactoryEntry{Serial: "JL-1", SecretHash: "$argon2id$h1", Model: "JL-200", Vendor: "jLock"}); err != nil {
		t.Fatal(err)
	}
	// The second enrolment of a serial does not win. (Sequentially: FerretDB
	// v1 does not make a conditional update atomic against a concurrent one —
	// the control plane serialises enrolments in-process, see
	// docs/control-plane.md.)
	for i, want := range []bool{true, false, false} {
		won, err := st.MarkEnrolled(ctx, "JL-1", "jl-1", time.Now())
		if err != nil || won != want {
			t.Fatalf("enrolment %d: won %v, %v; want %v", i, won, err, want)
		}
	}
	// Re-applying the bootstrap keeps the enrolment.
	if err := st.PutFactory(ctx, FactoryEntry{Serial: "JL-1", SecretHash: "$argon2id$h2", Model: "JL-200"}); err != nil {
		t.Fatal(err)
	}
	e, ok, err := st.Factory(ctx, "JL-1")
	if err != nil || !ok || e.Thing != "jl-1" || e.EnrolledAt.IsZero() || e.SecretHash != "$argon2id$h2" || e.Vendor != "" {
		t.Fatalf("factory entry %+v, %v, %v", e, ok, err)
	}
	hashes, err := st.FactoryHashes(ctx)
	if err != nil || hashes["JL-1"] != "$argon2id$h2" {
		t.Fatalf("FactoryHashes %v, %v", hashes, err)
	}
	if err := st.UnmarkEnrolled(ctx, "JL-1"); err != nil {
		t.Fatal(err)
	}
	if won, err := st.MarkEnrolled(ctx, "JL-1", "jl-1", time.Now()); err != nil || !won {
		t.Fatalf("enrolment after undo: %v, %v", won, err)
	}
	if _, ok, _ := st.Factory(ctx, "XX"); ok {
		t.Fatal("an unknown serial was found")
	}
}

func TestClaimUsedOnce(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	if err := st.PutClaim(ctx, "jl-1", "$argon2id$c", time.Now()); err != nil {
		t.Fatal(err)
	}
	if h, err := st.ClaimHash(ctx, "jl-1"); err != nil || h != "$argon2id$c" {
		t.Fatalf("ClaimHash %q, %v", h, err)
	}
	if won, err := st.DeleteClaim(ctx, "jl-1"); err != nil || !won {
		t.Fatalf("first claim: %v, %v", won, err)
	}
	if won, err := st.DeleteClaim(ctx, "jl-1"); err != nil || won {
		t.Fatalf("second claim: %v, %v", won, err)
	}
	if h, _ := st.ClaimHash(ctx, "jl-1"); h != "" {
		t.Fatalf("claim hash after use: %q", h)
	}
}
