package hooks

import (
	"context"
	"fmt"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/policies"
)

// Enrolment refusals: the reply's error (docs/control-plane.md).
const (
	errUnknownSerial    = "unknown serial"
	errAlreadyEnrolled  = "already enrolled"
	errIDTaken          = "the thing id is a user's name" // the user could no longer log in (things are looked up first)
	errTooManyAttempts  = "too many attempts"
	errClaimRefused     = "claim refused: wrong code, or the thing cannot be claimed"
	errNotCertified     = "not authorized: only a certified installer (certified_installer=true) may claim a thing"
	claimCodeAlphabet   = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789" // 32 symbols, no 0/O, 1/I
	claimCodeHalfLength = 4
)

// enrollRequest is the optional payload of $enroll/{serial}.
type enrollRequest struct {
	Kind    string   `json:"kind"`
	Streams []string `json:"streams"`
}

// ThingID is the thing id a serial enrols as: the serial in lower case.
func ThingID(serial string) string { return strings.ToLower(serial) }

// enroll turns a known, not yet enrolled serial into a thing with a fresh
// secret and a claim code (both returned once, stored argon2id-hashed).
// Refusals count against the serial; after too many, requests are refused
// without being looked at.
//
// Until the thing is claimed, enrolling again is answered as the first
// enrolment was, with a new secret and claim code that replace the old
// ones (reenroll): a device whose answer was lost (a timeout, a dropped
// connection, a crash before it stored its credentials) asks again, and
// "already enrolled" would leave it with no secret and its serial with no
// way back. Once anyone has a say over the thing, it stays refused.
func (c *Control) enroll(cl *mqtt.Client, p policies.Principal, serial string, payload []byte) result {
	if p.Kind != policies.KindDevice || p.ID != serial {
		return notAuthorized()
	}
	// Counted from when it starts, as a login is (FailureLimiter.Try).
	key, failed := "enroll:"+serial, false
	if !c.limiter.Try(key) {
		return refuse(codeNotAuthorized, errTooManyAttempts)
	}
	defer func() { c.limiter.Done(key, failed) }()
	fail := func(msg string) result {
		failed = true
		c.log.Info().Str("serial", serial).Str("reason", msg).Msg("enrolment refused")
		return refuse(codeNotAuthorized, "%s", msg)
	}
	var req enrollRequest
	if len(payload) > 0 {
		if err := decodeStrict(payload, &req); err != nil {
			return invalid(err)
		}
	}
	switch req.Kind {
	case "", "sensor", "actuator", "gateway":
	default:
		return refuse(codeInvalid, "kind: unknown kind %q (want sensor, actuator or gateway)", req.Kind)
	}
	for i, s := range req.Streams {
		if !validLevel(s) || strings.Contains(s, "/") {
			return refuse(codeInvalid, "streams[%d]: must be a non-empty MQTT topic level", i)
		}
	}
	id := ThingID(serial)
	if !validLevel(id) {
		return fail(errUnknownSerial)
	}

	if th, exists := c.engine.Thing(id); exists {
		// A first look, without the lock, so that a claimed thing costs
		// no argon2id; decided again under the lock below.
		if !reenrollable(c.engine, th, serial) {
			return fail(errAlreadyEnrolled)
		}
		// An enrolment again counts against the serial like a refusal:
		// one factory credential must not churn secrets and argon2id
		// without bound. A device whose answer got lost needs one or two.
		failed = true
	}
	// The device's secret and claim code are made and hashed before the
	// control plane's lock is taken and the store's deadline starts:
	// waiting for an argon2id slot (a connect storm) must hold up neither
	// other owners' changes nor this enrolment's writes.
	secret, err := randomString(32, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
	if err != nil {
		return unavailable(c.log, err)
	}
	code, err := randomString(2*claimCodeHalfLength, claimCodeAlphabet)
	if err != nil {
		return unavailable(c.log, err)
	}
	code = code[:claimCodeHalfLength] + "-" + code[claimCodeHalfLength:]
	secretHash, err := c.creds.Hash(secret, c.params)
	if err != nil {
		return unavailable(c.log, err)
	}
	codeHash, err := c.creds.Hash(code, c.params)
	if err != nil {
		return unavailable(c.log, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := c.ctx()
	defer cancel()
	entry, found, err := c.store.Factory(ctx, serial)
	if err != nil {
		return unavailable(c.log, err)
	}
	if !found {
		return fail(errUnknownSerial)
	}
	if !entry.RetiredAt.IsZero() {
		return fail(errAlreadyEnrolled)
	}
	if th, exists := c.engine.Thing(id); exists {
		return c.reenroll(ctx, cl, th, entry, secret, secretHash, code, codeHash, fail)
	}
	if _, isUser := c.engine.User(id); isUser {
		return fail(errIDTaken)
	}
	if !entry.EnrolledAt.IsZero() {
		// Marked enrolled, yet no thing exists: an earlier attempt stopped
		// part-way (a write that timed out but landed), so the device never
		// got its secret. Clear the mark and enrol afresh.
		if err := c.store.UnmarkEnrolled(ctx, serial); err != nil {
			return unavailable(c.log, err)
		}
		c.log.Warn().Str("serial", serial).Msg("completing an enrolment that stopped part-way")
	}
	now := c.clock.Now()
	won, err := c.store.MarkEnrolled(ctx, serial, id, now)
	if err != nil {
		// The write may have landed although it failed (a timeout): undo it
		// so that the device, which never gets its secret, can try again.
		cctx, ccancel := context.WithTimeout(context.Background(), c.timeout)
		_ = c.store.UnmarkEnrolled(cctx, serial)
		ccancel()
		return unavailable(c.log, err)
	}
	if !won {
		return fail(errAlreadyEnrolled)
	}
	attrs := policies.Attributes{"serial": serial}
	if entry.Model != "" {
		attrs["model"] = entry.Model
	}
	if entry.Vendor != "" {
		attrs["vendor"] = entry.Vendor
	}
	thing := policies.Thing{ID: id, Kind: req.Kind, Streams: req.Streams, Attributes: attrs}
	undo := func(err error) result {
		cctx, ccancel := context.WithTimeout(context.Background(), c.timeout)
		defer ccancel()
		_ = c.store.DeleteThing(cctx, id)
		_ = c.store.UnmarkEnrolled(cctx, serial)
		return unavailable(c.log, err)
	}
	if err := c.store.PutThing(ctx, thing, secretHash); err != nil {
		return undo(err)
	}
	if err := c.store.PutClaim(ctx, id, codeHash, now); err != nil {
		return undo(err)
	}
	if err := c.engine.PutThing(thing); err != nil {
		return undo(err)
	}
	c.creds.Set("thing:"+id, secretHash)
	c.record(ctx, policies.Relationship{Thing: id}, "", "enrolled", "factory:"+serial, "self-enrolment", "")
	c.retain("$config/things/"+id, docOf(thing))
	c.log.Info().Str("serial", serial).Str("thing", id).Msg("device enrolled")
	return ok(map[string]any{"thing": id, "secret": secret, "claim_code": code})
}

// reenrollable reports whether thing th may be enrolled again from serial,
// as far as the engine knows: nobody has a say over it yet. It has no owner
// of record, no relationship of any status (an installer's claim, an
// invitation), no place (a place's relations would hold for it), and it
// was made by this serial's enrolment.
func reenrollable(e *policies.Engine, th policies.Thing, serial string) bool {
	return th.Owner == "" && th.Place == "" && th.Attributes["serial"] == serial &&
		len(e.Relationships(th.ID, "")) == 0
}

// reenroll answers an enrolment of a thing that exists: under the control
// plane's lock, if the thing was enrolled from this serial and is still
// unclaimed (reenrollable, and its claim code unused), it gets the new
// secret and claim code, which replace the old ones; the old secret stops
// working, a connection made with it is closed. Otherwise "already
// enrolled". The thing document itself is left as it is.
func (c *Control) reenroll(ctx context.Context, cl *mqtt.Client, th policies.Thing, entry mongo.FactoryEntry, secret, secretHash, code, codeHash string, fail func(string) result) result {
	id, serial := th.ID, entry.Serial
	if entry.Thing != id || entry.EnrolledAt.IsZero() || !reenrollable(c.engine, th, serial) {
		return fail(errAlreadyEnrolled)
	}
	// Only for the connection that still holds the device's enrolment id:
	// a request that stalled (hashing, a lossy link) while the device gave
	// up and enrolled again would void the answer the device kept.
	if c.server != nil && cl != nil {
		if cur, ok := c.server.Clients.Get(cl.ID); !ok || cur != cl || cl.Closed() {
			return fail(errAlreadyEnrolled)
		}
	}
	hash, err := c.store.ClaimHash(ctx, id)
	if err != nil {
		return unavailable(c.log, err)
	}
	if hash == "" { // claimed (or the code dropped): someone may hold the thing
		return fail(errAlreadyEnrolled)
	}
	// The claim code first: a failure after it leaves a code nobody knows
	// and the old secret, and the device, which got no answer, asks again.
	if err := c.store.PutClaim(ctx, id, codeHash, c.clock.Now()); err != nil {
		return unavailable(c.log, err)
	}
	if found, err := c.store.SetSecretHash(ctx, id, secretHash); err != nil {
		return unavailable(c.log, err)
	} else if !found {
		return unavailable(c.log, fmt.Errorf("re-enrolment of %q: the thing is not in the store", id))
	}
	c.creds.Set("thing:"+id, secretHash)
	if c.server != nil {
		// A connection authenticated with the old secret ends with it.
		if cl, ok := c.server.Clients.Get(id); ok && !cl.Net.Inline {
			cl.Stop(packets.ErrNotAuthorized)
		}
	}
	c.record(ctx, policies.Relationship{Thing: id}, "enrolled", "enrolled", "factory:"+serial,
		"self-enrolment repeated before a claim: new secret and claim code, the earlier ones void", "")
	c.log.Warn().Str("serial", serial).Str("thing", id).Msg("device enrolled again before a claim: new secret and claim code issued, the earlier ones no longer work")
	return ok(map[string]any{"thing": id, "secret": secret, "claim_code": code})
}

// claim makes a certified installer the installer of a newly enrolled
// thing, given its claim code. Every refusal reads the same, whether the
// thing exists or not.
func (c *Control) claim(p policies.Principal, t cfgTopic, payload []byte) result {
	u, _ := c.engine.User(p.ID)
	if v, ok := u.Attributes["certified_installer"]; !ok || (v != true && v != "true") {
		return refuse(codeNotAuthorized, errNotCertified)
	}
	var req struct {
		Code string `json:"code"`
	}
	if err := decodeStrict(payload, &req); err != nil {
		return invalid(err)
	}
	if req.Code == "" {
		return refuse(codeInvalid, "code: is required")
	}
	// Counted per thing, and per claimant: the thing's key is one the
	// claimant names, and claims of made-up things would fill the limiter
	// (and once emptied it).
	// An attempt counts from when it starts (Try), as a login's does:
	// claims sent at once would otherwise all pass a check of the
	// failures so far.
	key, by := "claim:"+t.thing, "claim-by:"+p.ID
	if !c.limiter.Try(by) {
		return refuse(codeNotAuthorized, errTooManyAttempts)
	}
	if !c.limiter.Try(key) {
		c.limiter.Done(by, false)
		return refuse(codeNotAuthorized, errTooManyAttempts)
	}
	failedThing, failedBy := false, false
	defer func() {
		c.limiter.Done(key, failedThing)
		c.limiter.Done(by, failedBy)
	}()
	fail := func() result {
		_, exists := c.engine.Thing(t.thing)
		failedThing, failedBy = exists, true
		c.log.Info().Str("thing", clip(t.thing)).Str("by", p.ID).Msg("claim refused")
		return refuse(codeNotAuthorized, errClaimRefused)
	}
	hash := ""
	if _, exists := c.engine.Thing(t.thing); exists {
		var err error
		if hash, err = c.claimHash(t.thing); err != nil {
			return unavailable(c.log, err)
		}
	}
	if hash == "" {
		// Compared all the same (against a decoy): refused at once, an
		// unknown or claimed thing would read differently in time.
		_ = c.creds.CompareDecoy([]byte(req.Code), c.params, 0)
		return fail()
	}
	// Compared outside the control plane's lock and before the store's
	// deadline for the writes starts, as enrol hashes (a connect storm's
	// argon2id may keep it waiting for a slot).
	if match, err := c.creds.Compare(strings.ToUpper(strings.TrimSpace(req.Code)), hash); err != nil || !match {
		return fail()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := c.ctx()
	defer cancel()
	if _, exists := c.engine.Thing(t.thing); !exists { // deleted meanwhile
		return fail()
	}
	// The code compared must still be the thing's: an enrolment again
	// (reenroll) may have replaced it meanwhile, voiding the old one.
	if cur, err := c.store.ClaimHash(ctx, t.thing); err != nil {
		return unavailable(c.log, err)
	} else if cur != hash {
		return fail()
	}
	if won, err := c.store.DeleteClaim(ctx, t.thing); err != nil {
		return unavailable(c.log, err)
	} else if !won {
		return fail()
	}
	r := policies.Relationship{Thing: t.thing, User: p.ID, Relation: policies.RelInstaller, Status: policies.StatusActive}
	if err := c.store.PutRelationship(ctx, r); err != nil {
		cctx, ccancel := context.WithTimeout(context.Background(), c.timeout)
		defer ccancel()
		_ = c.store.PutClaim(cctx, t.thing, hash, c.clock.Now())
		return unavailable(c.log, err)
	}
	c.record(ctx, r, "", "active", p.ID, "claimed with the claim code", "")
	_ = c.engine.PutRelationship(r)
	c.retain(relTopic(r), relDoc(r, nil))
	if th, ok := c.engine.Thing(t.thing); ok {
		c.retain("$config/things/"+th.ID, docOf(th))
	}
	c.log.Info().Str("thing", t.thing).Str("installer", p.ID).Msg("thing claimed")
	return ok(map[string]any{"thing": t.thing, "relation": string(policies.RelInstaller)})
}

// claimHash reads the claim code's hash of thing ("" when it has none).
func (c *Control) claimHash(thing string) (string, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	return c.store.ClaimHash(ctx, thing)
}

// AddFactory registers (or updates) a device's factory credential: the
// secret is stored argon2id-hashed in MongoDB and the credential admitted
// at CONNECT from now on.
func (c *Control) AddFactory(ctx context.Context, serial, secret, model, vendor string) error {
	if serial == "" || strings.ContainsAny(serial, "/+#\x00") {
		return fmt.Errorf("serial %q: must be a non-empty MQTT topic level", serial)
	}
	if secret == "" {
		return fmt.Errorf("factory secret of %q: must not be empty", serial)
	}
	hash, err := c.creds.Hash(secret, c.params)
	if err != nil {
		return err
	}
	if err := c.store.PutFactory(ctx, mongo.FactoryEntry{Serial: serial, SecretHash: hash, Model: model, Vendor: vendor}); err != nil {
		return err
	}
	c.creds.Set(FactoryUserPrefix+serial, hash)
	return nil
}
