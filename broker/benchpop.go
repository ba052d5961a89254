package broker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/veil-iot/veil/policies"
)

// LoadBenchPopulation adds a generated population to the policy engine
// when --bench-population is set (the broker benchmark's scale scenario;
// never in production). It is in memory only: the metadata store is not
// written, so a restart without the flag is back to the stored state.
//
// Why not a bootstrap file: Apply writes item by item into the metadata
// store and hashes every password with argon2id; a million relation tuples
// that way take far longer than the benchmark may. This loads the stored
// state plus the population with the engine's bulk Load, the same path as
// a start.
//
// The population, for P policies and R tuples: P/10 owners pop-owner-i,
// each with 10 things, a place and 10 policies (9 for named guests and
// nurses on one of their things, with a condition; 1 for doctors on the
// location stream of all their things, with accuracy constraints);
// P/2 guests (every tenth a doctor by role); R relationships of guests to
// things and places (visitor, co-owner, installer) with time windows. The
// example household gets its share too, without changing who may see
// what: an extra 10 policies of an's (for guests and nurses) and 100
// visitor relations of guests on home-an, valid in 2020 only.
func (b *Broker) LoadBenchPopulation(ctx context.Context) error {
	spec := b.cfg.BenchPopulation
	if spec == "" {
		return nil
	}
	np, nr, err := parsePopulation(spec)
	if err != nil {
		return err
	}
	start := time.Now()
	snap, _, err := b.Store.Load(ctx)
	if err != nil {
		return fmt.Errorf("--bench-population: %w", err)
	}
	addBenchPopulation(&snap, np, nr)
	if err := b.Engine.Load(snap); err != nil {
		return fmt.Errorf("--bench-population: %w", err)
	}
	loaded := b.log.Warn().Int("policies", len(snap.Policies)).Int("relationships", len(snap.Relationships)).
		Int("users", len(snap.Users)).Int("things", len(snap.Things))
	snap = policies.Snapshot{}
	settleAfterLoad()
	loaded.Dur("took", time.Since(start)).
		Msg("bench population loaded (--bench-population, in memory only; benchmark only)")
	return nil
}

func parsePopulation(spec string) (int, int, error) {
	ps, rs, ok := strings.Cut(spec, ":")
	np, err1 := strconv.Atoi(ps)
	nr, err2 := strconv.Atoi(rs)
	if !ok || err1 != nil || err2 != nil || np < 10 || nr < 0 {
		return 0, 0, fmt.Errorf("--bench-population %q: want policies:tuples, e.g. 100000:1000000 (at least 10 policies)", spec)
	}
	return np, nr, nil
}

// addBenchPopulation appends np policies and nr relationships (and the
// users, things and places they need) to s.
func addBenchPopulation(s *policies.Snapshot, np, nr int) {
	const thingsPerOwner, policiesPerOwner = 10, 10
	owners := np / policiesPerOwner
	guests := max(np/2, 1)
	for o := range owners {
		s.Users = append(s.Users, policies.User{Name: fmt.Sprintf("pop-owner-%d", o)})
	}
	for g := range guests {
		role := "guest"
		if g%10 == 0 {
			role = "doctor"
		}
		s.Users = append(s.Users, policies.User{Name: fmt.Sprintf("pop-guest-%d", g),
			Attributes: policies.Attributes{"role": role, "level": float64(g % 5)}})
	}
	guestPolicy := func(owner string, p int, resource string) policies.Policy {
		return policies.Policy{ID: fmt.Sprintf("pop-%d", p), Priority: 100 + p, Effect: "allow",
			Subjects:  []string{fmt.Sprintf("user:pop-guest-%d", p*7%guests), "role:nurse"},
			Resources: []string{resource}, Actions: []policies.Action{policies.ActRead, policies.ActHistory},
			Purposes: []string{"care"}, When: &policies.Condition{Attr: "requester.level", Op: policies.OpGe, Value: 1.0}}
	}
	for o := range owners {
		owner := fmt.Sprintf("pop-owner-%d", o)
		place := fmt.Sprintf("pop-home-%d", o)
		s.Places = append(s.Places, policies.Place{ID: place, Owner: owner})
		for t := range thingsPerOwner {
			s.Things = append(s.Things, policies.Thing{ID: fmt.Sprintf("pop-t-%d-%d", o, t), Owner: owner, Kind: "sensor",
				Streams: []string{"temperature", "location"}, Place: place})
		}
		for p := range policiesPerOwner - 1 {
			s.Policies = append(s.Policies, policies.OwnedPolicy{Owner: owner,
				Policy: guestPolicy(owner, o*policiesPerOwner+p, fmt.Sprintf("things/pop-t-%d-%d/data/#", o, p))})
		}
		s.Policies = append(s.Policies, policies.OwnedPolicy{Owner: owner, Policy: policies.Policy{
			ID: "pop-doctor-location", Priority: 5, Effect: "allow", Subjects: []string{"role:doctor"},
			Resources: []string{"stream:location"}, Actions: []policies.Action{policies.ActRead},
			Constraints: []policies.Constraint{{Kind: policies.ConstraintAccuracy, Field: "lat", Step: 0.01},
				{Kind: policies.ConstraintAccuracy, Field: "lon", Step: 0.01}}}})
	}
	// The household's share: more of an's policies to consider (none for
	// the doctor or the stranger) and more relations on home-an (expired).
	for p := range policiesPerOwner {
		s.Policies = append(s.Policies, policies.OwnedPolicy{Owner: "an", Policy: guestPolicy("an", p, "things/+/data/#")})
	}
	past := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for g := range min(100, guests) {
		s.Relationships = append(s.Relationships, policies.Relationship{Place: "home-an", User: fmt.Sprintf("pop-guest-%d", g),
			Relation: policies.RelVisitor, Status: policies.StatusActive, ValidFrom: past, ValidUntil: past.AddDate(1, 0, 0)})
	}
	// Tuple i: thing i mod things, guest (i + k·7919) mod guests for the
	// k-th pass over the things, so tuples are distinct at the benchmark's
	// sizes (10 passes, 50,000 guests); a thing's first thing-of-place
	// tuples go to its place instead.
	rels := []policies.Relation{policies.RelVisitor, policies.RelVisitor, policies.RelVisitor, policies.RelCoOwner, policies.RelInstaller}
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nThings := max(owners*thingsPerOwner, 1)
	for i := range max(nr-min(100, guests), 0) {
		t, k := i%nThings, i/nThings
		o := t / thingsPerOwner
		r := policies.Relationship{User: fmt.Sprintf("pop-guest-%d", (t+k*7919)%guests), Relation: rels[k%len(rels)],
			Status: policies.StatusActive, ValidFrom: from, ValidUntil: from.AddDate(1, 0, 0)}
		if t%thingsPerOwner == 0 {
			r.Place = fmt.Sprintf("pop-home-%d", o)
		} else {
			r.Thing = fmt.Sprintf("pop-t-%d-%d", o, t%thingsPerOwner)
		}
		s.Relationships = append(s.Relationships, r)
	}
}
