package policies

import (
	"slices"
	"strings"
)

// MaySubscribe decides a SUBSCRIBE filter (without any $share/{group}/
// prefix). A filter naming one thing is refused unless the principal could
// ever receive something under it: it is the thing itself, holds an active
// relationship, or some allow policy of the thing's owners names it (when-
// conditions aside, since they may hold later). A filter with a wildcard in
// place of the thing is accepted: it can match many owners' things, and
// every single delivery under it is decided on its own by Decide.
func (e *Engine) MaySubscribe(p Principal, filter, purpose string) Decision {
	if !ValidFilter(filter) {
		return deny("invalid-filter")
	}
	first, rest, _ := strings.Cut(filter, "/")
	switch first {
	case "+", "#":
		return Decision{Effect: Allow, Rule: "wildcard"}
	case "things":
	default:
		return deny("unknown-topic")
	}
	thing, _, _ := strings.Cut(rest, "/")
	if thing == "" {
		return deny("unknown-topic")
	}
	if thing == "+" || thing == "#" {
		return Decision{Effect: Allow, Rule: "wildcard"}
	}

	e.mu.RLock()
	defer e.mu.RUnlock()
	x := evalCtx{e: e, req: Request{Principal: p, Topic: filter, Action: ActRead, Purpose: purpose}, now: e.clock.Now()}
	x.thing = e.things[thing]
	if x.thing == nil {
		return deny("unknown-thing")
	}
	base := Decision{Owner: x.thing.Owner, Thing: thing}
	switch p.Kind {
	case KindThing:
		if p.ID == thing {
			base.Effect, base.Rule = Allow, "self"
			return base
		}
		if x.requesterThing = e.things[p.ID]; x.requesterThing == nil {
			return deny("unknown-principal")
		}
	case KindUser:
		if x.user = e.users[p.ID]; x.user == nil {
			return deny("unknown-principal")
		}
		if x.thing.Owner == p.ID {
			base.Effect, base.Rule = Allow, "owner"
			return base
		}
		var rel string
		if uid, ok := e.rels.names.lookup(p.ID); ok {
			rs := e.rels
			e.eachObject(x.thing, func(obj uint32) bool {
				for i := rs.first(obj, uid); i != 0; i = rs.recs[i].next {
					// A visitor may subscribe before its window opens; deliveries
					// are decided per message.
					if r := &rs.recs[i]; r.status == statActive {
						rel = string(relations[r.relation])
						return false
					}
				}
				return true
			})
		}
		if rel != "" {
			base.Effect, base.Rule = Allow, rel
			return base
		}
	default:
		return deny("unknown-principal")
	}
	for _, c := range e.candidates(e.policyOwners(&x)) {
		if !c.allow || c.actions&actionBit(ActRead) == 0 ||
			(len(c.purposes) > 0 && !slices.Contains(c.purposes, purpose)) ||
			!e.subjectMatches(&x, c) {
			continue
		}
		for _, r := range c.resources {
			if r.overlaps(filter) {
				base.Effect, base.Rule, base.PolicyID, base.PolicyOwner = Allow, "policy", c.id, c.owner
				return base
			}
		}
	}
	base.Rule = "default"
	return base
}

// MayReadAnything reports whether p could be allowed to read anything —
// any stream, state or command of any thing — without a configuration
// change first. It answers false only when nothing names p: a user who owns
// no thing and no policy, appears in no relationship of any status or
// window, and whom no allow policy granting read could match, whatever
// its conditions (they may hold later). Everything else, things included,
// may read something. The broker parks such a user's wildcard
// subscriptions, since every delivery under them would be denied until the
// configuration changes (Changes tells when).
func (e *Engine) MayReadAnything(p Principal) bool {
	if p.Kind != KindUser {
		return true
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	u := e.users[p.ID]
	if u == nil {
		return false
	}
	if len(e.policies[p.ID]) > 0 {
		return true
	}
	if _, ok := e.rels.names.lookup(p.ID); ok {
		return true // named in some relationship (or an object's id): not worth telling apart
	}
	for _, t := range e.things {
		if t.Owner == p.ID {
			return true
		}
	}
	x := evalCtx{e: e, req: Request{Principal: p, Action: ActRead}, user: u, now: e.clock.Now()}
	for _, list := range e.policies {
		for _, c := range list {
			if !c.allow || c.actions&actionBit(ActRead) == 0 {
				continue
			}
			for _, s := range c.subjects {
				// A relation subject needs a relationship naming p, and there is none.
				if s.kind != subjRelation && e.subjectMatch(&x, s) {
					return true
				}
			}
		}
	}
	return false
}

// Changes counts the configuration changes applied so far (every Put,
// Delete and Load). A caller that keeps an answer derived from the
// configuration, such as MayReadAnything's, compares it to know when to ask
// again.
func (e *Engine) Changes() uint64 { return e.changes.Load() }
