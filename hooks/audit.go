package hooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/policies"
)

// Audit is the transparency trail (thesis NFR3): every access decision
// about a thing by someone other than its owners — who, which thing and
// stream, which action and declared purpose, allowed, denied or
// constrained, by which rule or policy — counted in memory per minute.
// Every flush interval the new counts go live to their owners; once a
// minute is over its counts are written to MongoDB, one document per owner
// and minute (adapters/mongo/audit.go), so a high-rate stream costs one map
// increment per decision and one insert per minute, not per message.
// Queries add the counts not yet written.
type Audit struct {
	store     *mongo.Store
	clock     policies.Clock
	log       zerolog.Logger
	retention time.Duration
	publish   func(owner string, payload []byte) // live view; may be nil
	writer    string                             // this run's name in stored documents' ids

	shards [auditShards]auditShard
	// minute is the current minute, kept by a ticker while the audit runs
	// on the wall clock (0 otherwise): reading the clock was half of what
	// recording a delivery cost.
	minute atomic.Int64

	flushMu   sync.Mutex         // one flush at a time; guards open, pending, batches and lastPrune
	open      map[auditKey]int64 // counts of minutes not over yet (and a late count of one that is)
	pending   []mongo.AuditBatch // finished minutes not stored yet: retried as they are, so a write that partly landed stores nothing twice
	batches   int64              // batches made so far, numbering the next one's ID
	lastPrune time.Time
	stop      chan struct{}
	done      chan struct{}
	cancel    context.CancelFunc // stops the migration of a legacy trail
}

const auditShards = 16

// maxPendingAudit bounds the records of finished minutes kept for a retry
// while the store is down.
const maxPendingAudit = 100_000

// auditWriteRecords is about how many records one store call writes.
const auditWriteRecords = 10_000

// auditGraceSeconds is how long after a minute's end its counts are written.
const auditGraceSeconds = 5

// pruneEvery is how often expired records are deleted. The first prune is
// one interval after the start, not at it: a prune reads the records of the
// day it deletes from, and a start is busy enough with every session
// reconnecting. Retention is days; ten minutes late costs nothing.
const pruneEvery = 10 * time.Minute

// lastFlush is the flush of Close: every count is written, the current
// minute's too.
const lastFlush = true

type auditKey struct {
	owner, who             string
	whoKind                policies.PrincipalKind
	thing, stream, purpose string
	action                 policies.Action
	effect                 uint8
	rule, policy, polOwner string
	minute                 int64
}

type auditShard struct {
	mu sync.Mutex
	m  map[auditKey]int64
	// recent holds the counts of the last few keys, folded into m by
	// drain: a stream's deliveries repeat the same key, and comparing a key
	// whose strings share their bytes with the cached one costs far less
	// than hashing it into the map (a third of the hook's time per delivery).
	recent [4]recentCount
	next   int
}

type recentCount struct {
	k auditKey
	n int64
}

// add counts n of k; the caller holds mu.
func (s *auditShard) add(k auditKey, n int64) {
	for i := range s.recent {
		if r := &s.recent[i]; r.n > 0 && r.k == k {
			r.n += n
			return
		}
	}
	r := &s.recent[s.next]
	s.next = (s.next + 1) % len(s.recent)
	if r.n > 0 {
		s.m[r.k] += r.n
	}
	*r = recentCount{k: k, n: n}
}

// drain folds the recent counts into m; the caller holds mu.
func (s *auditShard) drain() {
	for i := range s.recent {
		if r := &s.recent[i]; r.n > 0 {
			s.m[r.k] += r.n
			*r = recentCount{}
		}
	}
}

// AuditConfig wires an Audit.
type AuditConfig struct {
	Store     *mongo.Store
	Clock     policies.Clock // nil: wall clock
	Log       zerolog.Logger
	Retention time.Duration // how long records are kept
	// Publish delivers a flushed batch live to its owner ($config/users/{owner}/audit).
	Publish func(owner string, payload []byte)
	// Writer names this run in the ids of stored documents, so that two
	// runs never name a document alike; "" picks a random name. Tests set
	// it to know the ids.
	Writer string
}

// NewAudit returns an audit trail; Start runs its background flush.
func NewAudit(c AuditConfig) *Audit {
	if c.Clock == nil {
		c.Clock = policies.SystemClock{}
	}
	if c.Writer == "" {
		var run [8]byte
		_, _ = rand.Read(run[:])
		c.Writer = hex.EncodeToString(run[:])
	}
	a := &Audit{store: c.Store, clock: c.Clock, log: c.Log, retention: c.Retention, publish: c.Publish,
		writer: c.Writer, open: map[auditKey]int64{}, lastPrune: c.Clock.Now()}
	for i := range a.shards {
		a.shards[i].m = map[auditKey]int64{}
	}
	return a
}

const (
	effectDeny uint8 = iota
	effectAllow
	effectConstrained
)

var effectNames = [...]string{"deny", "allow", "constrained"}

// Record counts n alike decisions. It is the enforcer's AuditFunc: owners'
// own access, a thing's own and decisions about unowned things are not
// recorded. It does not allocate once the minute's key exists.
func (a *Audit) Record(p policies.Principal, act policies.Action, purpose string, d *policies.Decision, n int64) {
	if d.Owner == "" || d.Thing == "" {
		return
	}
	switch d.Rule {
	case "owner", "co_owner", "self":
		return
	}
	if p.Kind == policies.KindUser && p.ID == d.Owner {
		return
	}
	effect := effectDeny
	if d.Allowed() {
		effect = effectAllow
		if d.View != nil {
			effect = effectConstrained
		}
	}
	k := auditKey{owner: d.Owner, who: p.ID, whoKind: p.Kind, thing: d.Thing, stream: mongo.ClipAuditField(d.Stream),
		purpose: mongo.ClipAuditField(purpose), action: act, effect: effect, rule: d.Rule, policy: d.PolicyID,
		polOwner: d.PolicyOwner, minute: a.currentMinute()}
	// Sharded by who and which thing: one subscriber's deliveries from many
	// things (a fan-in) are recorded from as many publishers' goroutines at
	// once, and on one lock they queued behind whichever holder the
	// operating system had preempted. By where the two strings are, not by
	// their bytes, which took as long as the rest of Record: a key recorded
	// from strings at other addresses counts in another shard, and a flush
	// adds the shards up.
	h := uint64(uintptr(unsafe.Pointer(unsafe.StringData(p.ID)))) ^ uint64(uintptr(unsafe.Pointer(unsafe.StringData(d.Thing))))*31
	s := &a.shards[(h*0x9E3779B97F4A7C15>>32)%auditShards]
	s.mu.Lock()
	s.add(k, n)
	s.mu.Unlock()
}

// currentMinute is the minute a record made now counts in.
func (a *Audit) currentMinute() int64 {
	if m := a.minute.Load(); m != 0 {
		return m
	}
	return a.clock.Now().Unix() / 60
}

// keepMinute updates a.minute every second until stop closes. A record may
// so count in the minute before its own for up to a second (longer if this
// goroutine is starved); it is then a late count of that minute, which a
// flush stores in its own document, not a lost one.
func (a *Audit) keepMinute(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		a.minute.Store(time.Now().Unix() / 60)
		select {
		case <-stop:
			a.minute.Store(0)
			return
		case <-t.C:
		}
	}
}

// Start flushes every interval until Close, and moves a trail stored by
// an earlier Veil into the current layout.
func (a *Audit) Start(interval time.Duration) {
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	migrated := make(chan struct{})
	go func() {
		defer close(migrated)
		a.migrate(ctx)
	}()
	ticked := make(chan struct{})
	if _, wall := a.clock.(policies.SystemClock); wall {
		go func() {
			defer close(ticked)
			a.keepMinute(a.stop)
		}()
	} else {
		close(ticked) // a test's clock is read on every record
	}
	go func() {
		defer close(a.done)
		defer func() { <-migrated; <-ticked }()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-a.stop:
				a.flush(context.Background(), lastFlush)
				return
			case <-t.C:
				a.flush(context.Background(), !lastFlush)
			}
		}
	}()
}

// migrate moves a trail stored by an earlier Veil (a document per record,
// which every query read whole) into day collections, trying again every
// pruneEvery until it has or Close cancels it. Its records are missing from
// queries until it is done; it runs on the first start of this version.
func (a *Audit) migrate(ctx context.Context) {
	for {
		err := a.migrateOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		a.log.Warn().Err(err).Dur("retry_in", pruneEvery).Msg("audit records of an earlier version not moved yet")
		select {
		case <-ctx.Done():
			return
		case <-time.After(pruneEvery):
		}
	}
}

func (a *Audit) migrateOnce(ctx context.Context) error {
	if ok, err := a.store.HasLegacyAudit(ctx); err != nil || !ok {
		return err
	}
	started := time.Now()
	a.log.Info().Msg("moving the audit records of an earlier version into day collections")
	n, err := a.store.MigrateLegacyAudit(ctx, a.clock.Now().Add(-a.retention))
	if err != nil {
		return err
	}
	a.log.Info().Int("records", n).Dur("took", time.Since(started)).Msg("audit records of an earlier version moved")
	return nil
}

// Close stops the background flush and writes every count, the current
// minute's too.
func (a *Audit) Close() {
	if a.stop != nil {
		a.cancel()
		close(a.stop)
		<-a.done
		a.stop = nil
		return
	}
	a.flush(context.Background(), lastFlush)
}

// Flush sends the counts gathered since the last flush live to their
// owners and writes every count of minutes that are over. While the store
// is unreachable those counts are kept for the next flush (up to a bound).
func (a *Audit) Flush(ctx context.Context) { a.flush(ctx, !lastFlush) }

func (a *Audit) flush(ctx context.Context, final bool) {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	fresh := map[auditKey]int64{}
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.Lock()
		s.drain()
		var m map[auditKey]int64
		if len(s.m) > 0 {
			m, s.m = s.m, make(map[auditKey]int64, len(s.m))
		}
		s.mu.Unlock()
		for k, n := range m {
			fresh[k] += n
			a.open[k] += n
		}
	}
	if a.publish != nil && len(fresh) > 0 {
		byOwner := map[string][]mongo.AuditRecord{}
		for k, n := range fresh {
			byOwner[k.owner] = append(byOwner[k.owner], k.record(n))
		}
		for owner, rs := range byOwner {
			payload, _ := json.Marshal(map[string]any{"records": mongo.MergeAudit(rs, 0)})
			a.publish(owner, payload)
		}
	}
	a.write(ctx, final)
	a.prune(ctx)
}

// write moves the open counts of minutes that are over (all of them on the
// final flush) into batches, one per owner and minute, and stores every
// batch not stored yet.
func (a *Audit) write(ctx context.Context, final bool) {
	now := a.clock.Now().Unix()
	type ownerMinute struct {
		owner  string
		minute int64
	}
	made := map[ownerMinute]int{}
	for k, n := range a.open {
		if !final && (k.minute+1)*60+auditGraceSeconds > now {
			continue
		}
		om := ownerMinute{k.owner, k.minute}
		i, ok := made[om]
		if !ok || len(a.pending[i].Records) == mongo.MaxAuditBatch {
			a.batches++
			minute := time.Unix(k.minute*60, 0).UTC()
			i = len(a.pending)
			made[om] = i
			a.pending = append(a.pending, mongo.AuditBatch{ID: mongo.AuditBatchID(k.owner, minute, a.writer, a.batches),
				Owner: k.owner, Minute: minute})
		}
		a.pending[i].Records = append(a.pending[i].Records, k.record(n))
		delete(a.open, k)
	}
	// Stored a part at a time, each with its own deadline: a backlog left
	// by an outage drains over flushes instead of timing out whole. (The
	// embedded store took 1.3 s for 100,000 records in one call on the
	// benchmark machine, and a Raspberry Pi is several times slower.)
	var err error
	for len(a.pending) > 0 && err == nil {
		n, records := 0, 0
		for n < len(a.pending) && (n == 0 || records+len(a.pending[n].Records) <= auditWriteRecords) {
			records += len(a.pending[n].Records)
			n++
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err = a.store.AddAudit(wctx, a.pending[:n]); err == nil {
			a.pending = a.pending[n:]
		}
		cancel()
	}
	if err == nil {
		a.pending = nil
		return
	}
	records := 0
	for _, b := range a.pending {
		records += len(b.Records)
	}
	if records > maxPendingAudit {
		slices.SortStableFunc(a.pending, func(x, y mongo.AuditBatch) int { return x.Minute.Compare(y.Minute) })
		dropped := 0
		for records > maxPendingAudit {
			records -= len(a.pending[0].Records)
			dropped += len(a.pending[0].Records)
			a.pending = a.pending[1:]
		}
		a.log.Warn().Int("dropped", dropped).Msg("audit backlog full; oldest records dropped")
	}
	if final {
		a.log.Error().Err(err).Int("records", records).Msg("audit records lost: the metadata store failed at shutdown")
		return
	}
	a.log.Warn().Err(err).Int("records", records).Msg("audit records kept for the next flush: metadata store unavailable")
}

func (k auditKey) record(n int64) mongo.AuditRecord {
	who := k.who
	if k.whoKind == policies.KindThing {
		who = "thing:" + who
	}
	return mongo.AuditRecord{
		Owner: k.owner, Minute: time.Unix(k.minute*60, 0).UTC(), Who: who, Thing: k.thing, Stream: k.stream,
		Action: string(k.action), Purpose: k.purpose, Effect: effectNames[k.effect], Rule: k.rule,
		Policy: k.policy, PolicyOwner: k.polOwner, Count: n,
	}
}

// prune deletes the records older than the retention, once every pruneEvery.
func (a *Audit) prune(ctx context.Context) {
	now := a.clock.Now()
	if now.Sub(a.lastPrune) < pruneEvery {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	days, docs, err := a.store.PruneAudit(pctx, now.Add(-a.retention))
	// A prune that failed (the store down, or too slow) waits for the next
	// interval too: retried on every flush it would hold the flush up and
	// take a core, and expired records harm nothing for ten more minutes.
	a.lastPrune = now
	if err != nil {
		a.log.Warn().Err(err).Msg("pruning audit records")
		return
	}
	if days > 0 || docs > 0 {
		a.log.Info().Int("days", days).Int64("documents", docs).Msg("expired audit records pruned")
	}
}

// Query returns owner's records with since <= minute < until, the stored
// ones and the counts not written yet, up to the last decision.
func (a *Audit) Query(ctx context.Context, owner string, since, until time.Time, limit int) ([]mongo.AuditRecord, error) {
	since = since.Truncate(time.Minute)
	// No flush may move counts from open to the store while both are read.
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	batches, err := a.store.AuditBatches(ctx, owner, since, until)
	if err != nil {
		return nil, err
	}
	var stored []mongo.AuditRecord
	ids := make(map[string]bool, len(batches))
	for _, b := range batches {
		stored = append(stored, b.Records...)
		ids[b.ID] = true
	}
	from, to := since.Unix(), until.Unix()
	for _, b := range a.pending {
		if b.Owner == owner && !ids[b.ID] && b.Minute.Unix() >= from && b.Minute.Unix() < to {
			stored = append(stored, b.Records...)
		}
	}
	in := func(k auditKey) bool { return k.owner == owner && k.minute*60 >= from && k.minute*60 < to }
	for k, n := range a.open {
		if in(k) {
			stored = append(stored, k.record(n))
		}
	}
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.Lock()
		s.drain()
		for k, n := range s.m {
			if in(k) {
				stored = append(stored, k.record(n))
			}
		}
		s.mu.Unlock()
	}
	return mongo.MergeAudit(stored, limit), nil
}
