package hooks

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/policies"
)

// Audit is the transparency trail (thesis NFR3): every access decision
// about a thing by someone other than its owners — who, which thing and
// stream, which action and declared purpose, allowed, denied or
// constrained, by which rule or policy — counted in memory per minute and
// written to MongoDB in the background, so a high-rate stream costs one
// map increment per decision and one document per minute, not per message.
type Audit struct {
	store     *mongo.Store
	clock     policies.Clock
	log       zerolog.Logger
	retention time.Duration
	publish   func(owner string, payload []byte) // live view; may be nil

	shards [auditShards]auditShard

	flushMu   sync.Mutex // one flush at a time
	pending   []mongo.AuditRecord
	lastPrune time.Time
	stop      chan struct{}
	done      chan struct{}
}

const auditShards = 16

// maxPendingAudit bounds the records kept for a retry while the store is down.
const maxPendingAudit = 100_000

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
}

// AuditConfig wires an Audit.
type AuditConfig struct {
	Store     *mongo.Store
	Clock     policies.Clock // nil: wall clock
	Log       zerolog.Logger
	Retention time.Duration // how long records are kept
	// Publish delivers a flushed batch live to its owner ($config/users/{owner}/audit).
	Publish func(owner string, payload []byte)
}

// NewAudit returns an audit trail; Start runs its background flush.
func NewAudit(c AuditConfig) *Audit {
	if c.Clock == nil {
		c.Clock = policies.SystemClock{}
	}
	a := &Audit{store: c.Store, clock: c.Clock, log: c.Log, retention: c.Retention, publish: c.Publish}
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

// Record counts one decision. It is the enforcer's AuditFunc: owners' own
// access, a thing's own and decisions about unowned things are not recorded.
// It does not allocate once the minute's key exists.
func (a *Audit) Record(p policies.Principal, act policies.Action, purpose string, d policies.Decision) {
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
	k := auditKey{owner: d.Owner, who: p.ID, whoKind: p.Kind, thing: d.Thing, stream: d.Stream, purpose: purpose,
		action: act, effect: effect, rule: d.Rule, policy: d.PolicyID, polOwner: d.PolicyOwner,
		minute: a.clock.Now().Unix() / 60}
	var h uint32 = 2166136261
	for i := 0; i < len(p.ID); i++ {
		h = (h ^ uint32(p.ID[i])) * 16777619
	}
	s := &a.shards[h%auditShards]
	s.mu.Lock()
	s.m[k]++
	s.mu.Unlock()
}

// Start flushes every interval until Close.
func (a *Audit) Start(interval time.Duration) {
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(a.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-a.stop:
				a.Flush(context.Background())
				return
			case <-t.C:
				a.Flush(context.Background())
			}
		}
	}()
}

// Close stops the background flush after a last one.
func (a *Audit) Close() {
	if a.stop != nil {
		close(a.stop)
		<-a.done
		a.stop = nil
	}
}

// Flush writes the counts gathered so far (adding to the minute documents)
// and sends them live to their owners. While the store is unreachable the
// records are kept for the next flush (up to a bound).
func (a *Audit) Flush(ctx context.Context) {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	records := a.pending
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.Lock()
		var m map[auditKey]int64
		if len(s.m) > 0 {
			m, s.m = s.m, make(map[auditKey]int64, len(s.m))
		}
		s.mu.Unlock()
		for k, n := range m {
			who := k.who
			if k.whoKind == policies.KindThing {
				who = "thing:" + who
			}
			records = append(records, mongo.AuditRecord{
				Owner: k.owner, Minute: time.Unix(k.minute*60, 0).UTC(), Who: who, Thing: k.thing, Stream: k.stream,
				Action: string(k.action), Purpose: k.purpose, Effect: effectNames[k.effect], Rule: k.rule,
				Policy: k.policy, PolicyOwner: k.polOwner, Count: n,
			})
		}
	}
	a.pending = nil
	if len(records) == 0 {
		a.prune(ctx)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := a.store.AddAudit(wctx, records, a.retention)
	cancel()
	if err != nil {
		if len(records) > maxPendingAudit {
			a.log.Warn().Int("dropped", len(records)-maxPendingAudit).Msg("audit backlog full; oldest records dropped")
			records = records[len(records)-maxPendingAudit:]
		}
		a.pending = records
		a.log.Warn().Err(err).Int("records", len(records)).Msg("audit records kept for the next flush: metadata store unavailable")
		return
	}
	if a.publish != nil {
		byOwner := map[string][]mongo.AuditRecord{}
		for _, r := range records {
			byOwner[r.Owner] = append(byOwner[r.Owner], r)
		}
		for owner, rs := range byOwner {
			payload, _ := json.Marshal(map[string]any{"records": rs})
			a.publish(owner, payload)
		}
	}
	a.prune(ctx)
}

// prune deletes expired records where the server has no TTL index.
func (a *Audit) prune(ctx context.Context) {
	now := a.clock.Now()
	if a.store.AuditTTL() || now.Sub(a.lastPrune) < 10*time.Minute {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := a.store.PruneAudit(pctx, now)
	if err != nil {
		a.log.Warn().Err(err).Msg("pruning audit records")
		return
	}
	a.lastPrune = now
	if n > 0 {
		a.log.Info().Int64("deleted", n).Msg("expired audit records pruned")
	}
}

// Query returns owner's records with since <= minute < until.
func (a *Audit) Query(ctx context.Context, owner string, since, until time.Time, limit int) ([]mongo.AuditRecord, error) {
	return a.store.Audit(ctx, owner, since.Truncate(time.Minute), until, limit)
}
