package broker

import (
	"testing"

	"github.com/veil-iot/veil/policies"
)

// The generated population has the sizes asked for, distinct tuples, and
// leaves the household's entitlements as they were.
func TestBenchPopulation(t *testing.T) {
	if _, _, err := parsePopulation("100000"); err == nil {
		t.Fatal("a spec without tuples was accepted")
	}
	np, nr, err := parsePopulation("1000:10000")
	if err != nil || np != 1000 || nr != 10000 {
		t.Fatalf("parse: %d %d %v", np, nr, err)
	}
	household := func() policies.Snapshot {
		return policies.Snapshot{
			Users:  []policies.User{{Name: "an"}, {Name: "doctor", Attributes: policies.Attributes{"role": "doctor"}}, {Name: "stranger"}},
			Places: []policies.Place{{ID: "home-an", Owner: "an"}},
			Things: []policies.Thing{{ID: "thermo-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature"}, Place: "home-an"}},
			Policies: []policies.OwnedPolicy{{Owner: "an", Policy: policies.Policy{ID: "doctor-thermo", Priority: 30, Effect: "allow",
				Subjects: []string{"role:doctor"}, Resources: []string{"things/thermo-1/data/temperature"}, Actions: []policies.Action{policies.ActRead},
				Constraints: []policies.Constraint{{Kind: policies.ConstraintAccuracy, Field: "temperature", Step: 0.1}}}}},
		}
	}
	snap := household()
	addBenchPopulation(&snap, np, nr)
	if got := len(snap.Policies); got != np+10+1 {
		t.Fatalf("%d policies, want %d (population + an's 10 + doctor-thermo)", got, np+11)
	}
	if got := len(snap.Relationships); got != nr {
		t.Fatalf("%d relationships, want %d", got, nr)
	}
	seen := map[string]bool{}
	for _, r := range snap.Relationships {
		k := r.Object() + "|" + r.User + "|" + string(r.Relation)
		if seen[k] {
			t.Fatalf("duplicate tuple %s", k)
		}
		seen[k] = true
	}
	decide := func(e *policies.Engine, user string) string {
		d := e.Decide(policies.Request{Principal: policies.UserPrincipal(user), Topic: "things/thermo-1/data/temperature", Action: policies.ActRead})
		return d.Rule + "/" + d.PolicyID
	}
	plain := policies.NewEngine(policies.Options{Secret: []byte("x")})
	big := policies.NewEngine(policies.Options{Secret: []byte("x")})
	if err := plain.Load(household()); err != nil {
		t.Fatal(err)
	}
	if err := big.Load(snap); err != nil {
		t.Fatal(err)
	}
	d := big.Decide(policies.Request{Principal: policies.UserPrincipal("pop-guest-1"), Topic: "things/thermo-1/data/temperature", Action: policies.ActRead})
	if d.Allowed() {
		t.Fatalf("a population guest may read the household's thermostat: %+v", d)
	}
	for _, u := range []string{"an", "doctor", "stranger"} {
		if a, b := decide(plain, u), decide(big, u); a != b {
			t.Errorf("%s: %s without the population, %s with it", u, a, b)
		}
	}
}
