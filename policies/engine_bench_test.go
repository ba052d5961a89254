package policies

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// Scale of the targets: 100,000 policies over 10,000 owners and
// 1,000,000 relationship tuples.
const (
	benchOwners          = 10_000
	benchThingsPerOwner  = 10
	benchPoliciesPerUser = 10
	benchRelations       = 1_000_000
	benchGuests          = 50_000
)

// bigSnapshot builds a deterministic household population at that scale.
func bigSnapshot() Snapshot {
	var s Snapshot
	for o := range benchOwners {
		s.Users = append(s.Users, User{Name: fmt.Sprintf("owner-%d", o)})
	}
	for g := range benchGuests {
		role := "guest"
		if g%10 == 0 {
			role = "doctor"
		}
		s.Users = append(s.Users, User{Name: fmt.Sprintf("guest-%d", g), Attributes: Attributes{"role": role, "level": float64(g % 5)}})
	}
	for o := range benchOwners {
		owner := fmt.Sprintf("owner-%d", o)
		place := fmt.Sprintf("home-%d", o)
		s.Places = append(s.Places, Place{ID: place, Owner: owner})
		for t := range benchThingsPerOwner {
			s.Things = append(s.Things, Thing{ID: fmt.Sprintf("t-%d-%d", o, t), Owner: owner, Kind: "sensor",
				Streams: []string{"temperature", "location"}, Place: place})
		}
		for p := range benchPoliciesPerUser {
			pol := Policy{ID: fmt.Sprintf("p%d", p), Priority: p, Effect: "allow",
				Subjects:  []string{fmt.Sprintf("user:guest-%d", (o*7+p)%benchGuests), "role:nurse"},
				Resources: []string{fmt.Sprintf("things/t-%d-%d/data/#", o, p)},
				Actions:   []Action{ActRead, ActHistory}, Purposes: []string{"care"},
				When: &Condition{Attr: "requester.level", Op: OpGe, Value: 1.0}}
			if p == benchPoliciesPerUser-1 {
				pol.Subjects = []string{"role:doctor"}
				pol.When = nil
				pol.Resources = []string{"stream:location"}
				pol.Constraints = []Constraint{{Kind: ConstraintAccuracy, Field: "lat", Step: 0.01}, {Kind: ConstraintAccuracy, Field: "lon", Step: 0.01}}
			}
			s.Policies = append(s.Policies, OwnedPolicy{Owner: owner, Policy: pol})
		}
	}
	// Tuple i: thing i mod things and guest (i + k·7919) mod guests on the
	// k-th pass over the things, so all 1,000,000 tuples are distinct (as
	// the broker's --bench-population generates them); a thing's first
	// thing-of-place tuples go to its place instead.
	rels := []Relation{RelVisitor, RelVisitor, RelVisitor, RelCoOwner, RelInstaller}
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const things = benchOwners * benchThingsPerOwner
	for i := range benchRelations {
		t, k := i%things, i/things
		o := t / benchThingsPerOwner
		r := Relationship{User: fmt.Sprintf("guest-%d", (t+k*7919)%benchGuests), Relation: rels[k%len(rels)], Status: StatusActive,
			ValidFrom: from, ValidUntil: from.AddDate(1, 0, 0)}
		if t%benchThingsPerOwner == 0 {
			r.Place = fmt.Sprintf("home-%d", o)
		} else {
			r.Thing = fmt.Sprintf("t-%d-%d", o, t%benchThingsPerOwner)
		}
		s.Relationships = append(s.Relationships, r)
	}
	return s
}

var benchEngine *Engine

func loadedEngine(b *testing.B) *Engine {
	if benchEngine == nil {
		benchEngine = NewEngine(Options{Clock: newFakeClock(t0), Secret: []byte("bench")})
		if err := benchEngine.Load(bigSnapshot()); err != nil {
			b.Fatal(err)
		}
	}
	return benchEngine
}

// BenchmarkDecideCached: a subscriber's repeated delivery decision.
func BenchmarkDecideCached(b *testing.B) {
	e := loadedEngine(b)
	req := Request{Principal: UserPrincipal("guest-0"), Topic: "things/t-4321-9/data/location", Action: ActRead, Purpose: "care"}
	if d := e.Decide(req); !d.Allowed() || d.View == nil {
		b.Fatalf("setup: %s", d.Reason())
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(req)
	}
}

// BenchmarkDecideUncached: full evaluation against the loaded population,
// cycling through owners so no lookup is warm.
func BenchmarkDecideUncached(b *testing.B) {
	e := loadedEngine(b)
	reqs := make([]Request, 4096)
	for i := range reqs {
		o := (i * 7919) % benchOwners
		reqs[i] = Request{Principal: UserPrincipal(fmt.Sprintf("guest-%d", (i*31)%benchGuests)),
			Topic: fmt.Sprintf("things/t-%d-%d/data/location", o, i%benchThingsPerOwner), Action: ActRead, Purpose: "care"}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e.DecideUncached(reqs[i&4095])
		i++
	}
}

// BenchmarkLoad: loading 100,000 policies and 1,000,000 tuples. It reports
// what the engine keeps once the snapshot is gone, as in the broker, which
// drops its snapshot after Load: the live heap (MiB-heap), the number of
// live heap objects (objects), the part of the heap the garbage collector
// scans for pointers (MiB-scan: what every cycle marks again while the
// broker runs; pointer-free memory is never scanned), and the time of one
// full collection with the engine alive (gc-ms, the fastest of three, and
// gc-cpu-ms, the runtime's estimate of the processor time the collector
// spent on each of them, less sensitive than gc-ms to other work on the
// machine).
func BenchmarkLoad(b *testing.B) {
	var heap, objects, scan, gcTime, gcCPU float64
	scanned := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	gcCPUTime := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		metrics.Read(scanned)
		scanBefore := scanned[0].Value.Uint64()
		s := bigSnapshot()
		b.StartTimer()
		e := NewEngine(Options{Clock: newFakeClock(t0)})
		if err := e.Load(s); err != nil {
			b.Fatal(err)
		}
		b.StopTimer() // s is dead from here on, as the broker's snapshot
		runtime.GC()
		gcTime = 0
		metrics.Read(gcCPUTime)
		cpuBefore := gcCPUTime[0].Value.Float64()
		for range 3 { // the fastest of three: the machine may be busy
			start := time.Now()
			runtime.GC()
			if ms := float64(time.Since(start).Microseconds()) / 1000; gcTime == 0 || ms < gcTime {
				gcTime = ms
			}
		}
		metrics.Read(gcCPUTime)
		gcCPU = (gcCPUTime[0].Value.Float64() - cpuBefore) * 1000 / 3
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		heap = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
		objects = float64(after.HeapObjects - before.HeapObjects)
		metrics.Read(scanned)
		scan = float64(scanned[0].Value.Uint64()-scanBefore) / (1 << 20)
		runtime.KeepAlive(e)
		b.StartTimer()
	}
	b.ReportMetric(heap, "MiB-heap")
	b.ReportMetric(objects, "objects")
	b.ReportMetric(scan, "MiB-scan")
	b.ReportMetric(gcTime, "gc-ms")
	b.ReportMetric(gcCPU, "gc-cpu-ms")
}

// BenchmarkDecideCachedHousehold: the same lookup in a small engine, where
// the garbage collector has little heap to scan.
func BenchmarkDecideCachedHousehold(b *testing.B) {
	e := household(b, newFakeClock(t0))
	if err := e.PutPolicy("an", Policy{ID: "doc", Effect: "allow", Subjects: []string{"role:doctor"},
		Resources: []string{"things/watch-1/data/location"}, Actions: []Action{ActRead},
		Constraints: []Constraint{{Kind: ConstraintAccuracy, Field: "lat", Step: 0.01}}}); err != nil {
		b.Fatal(err)
	}
	req := Request{Principal: UserPrincipal("doctor"), Topic: "things/watch-1/data/location", Action: ActRead}
	if d := e.Decide(req); !d.Allowed() {
		b.Fatal(d.Reason())
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(req)
	}
}
