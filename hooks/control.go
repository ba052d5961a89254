package hooks

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/alexedwards/argon2id"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/policies"
)

// The control plane (docs/control-plane.md): owners configure Veil over MQTT.
//
//	$config/users/{owner}/policies/{id}        policy document (retained)
//	$config/users/{owner}/audit                audit aggregates, live
//	$config/users/{owner}/audit/query          v5 request: audit for a time range
//	$config/things/{thing}                     thing document (retained)
//	$config/things/{thing}/claim               certified installer claims with the claim code
//	$config/things/{thing}/relations/{user}    invitation / relation (retained); empty revokes
//	$config/places/{place}/relations/{user}    same for a place
//	$config/invitations/{user}/{id}            pending invitation (retained, broker-written)
//	$config/invitations/{user}/{id}/answer     {"accept": true|false}
//	$config/replies/{clientId}[/…]             answers
//	$enroll/{serial}                           device self-enrolment (v5 request)
//
// Every publish is handled in OnPublish: authorised, validated, stored in
// MongoDB, applied to the engine, and only then retained — by the broker
// itself, in canonical form, through its own inline client. The client's
// packet is never retained or forwarded as sent (OnPublish answers
// CodeSuccessIgnore, or a v5 error reason code), so a rejected publish
// leaves no trace. At start the retained $config tree is rebuilt from
// MongoDB; until then no $config message is delivered.

// Reply errors that say nothing about whether an object exists.
const (
	errNotAuthorized = "not authorized"
	errUnavailable   = "metadata store unavailable"
)

// Reason codes of refused v5 publishes (with QoS > 0).
var (
	codeNotAuthorized = packets.Code{Code: 0x87, Reason: errNotAuthorized}
	codeInvalid       = packets.Code{Code: 0x99, Reason: "invalid configuration"}
	codeUnavailable   = packets.Code{Code: 0x80, Reason: errUnavailable}
)

// ControlConfig wires the control plane.
type ControlConfig struct {
	Engine        *policies.Engine
	Store         *mongo.Store
	Credentials   *Credentials
	Sessions      *Sessions
	Server        *mqtt.Server
	Clock         policies.Clock // nil: wall clock
	Log           zerolog.Logger
	InvitationTTL time.Duration    // 0: 7 days
	Audit         *Audit           // nil: no audit queries
	HashParams    *argon2id.Params // secrets and claim codes issued; nil: argon2id.DefaultParams
	StoreTimeout  time.Duration    // bound on one store operation; 0: 3 s
	// EnrollLimiter counts refused enrolments and claims per serial or
	// thing; nil: 5 per 15 minutes.
	EnrollLimiter *FailureLimiter
}

// Control is the control-plane hook and the SystemTopics handler of $config and $enroll.
type Control struct {
	mqtt.HookBase
	engine   *policies.Engine
	store    *mongo.Store
	creds    *Credentials
	sessions *Sessions
	server   *mqtt.Server
	clock    policies.Clock
	log      zerolog.Logger
	ttl      time.Duration
	audit    *Audit
	params   *argon2id.Params
	timeout  time.Duration
	limiter  *FailureLimiter

	inline *mqtt.Client
	mu     sync.Mutex // serialises configuration changes: store and engine move together
	ready  atomic.Bool
}

// NewControl returns the control plane; add it to the server (for
// OnStarted) and Attach it to the enforcer, which hands it its publishes.
func NewControl(c ControlConfig) *Control {
	if c.Clock == nil {
		c.Clock = policies.SystemClock{}
	}
	if c.InvitationTTL <= 0 {
		c.InvitationTTL = 7 * 24 * time.Hour
	}
	if c.HashParams == nil {
		c.HashParams = argon2id.DefaultParams
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 3 * time.Second
	}
	if c.EnrollLimiter == nil {
		c.EnrollLimiter = NewFailureLimiter(5, 15*time.Minute, c.Clock)
	}
	ctl := &Control{engine: c.Engine, store: c.Store, creds: c.Credentials, sessions: c.Sessions, server: c.Server,
		clock: c.Clock, log: c.Log, ttl: c.InvitationTTL, audit: c.Audit, params: c.HashParams, timeout: c.StoreTimeout,
		limiter: c.EnrollLimiter}
	ctl.inline = c.Server.NewClient(nil, "local", "veil-control", true)
	ctl.inline.Properties.ProtocolVersion = 5
	return ctl
}

// ID names the hook.
func (c *Control) ID() string { return "veil-control" }

// The enforcer finds its publishes by this interface; a changed
// signature must not silently drop them.
var _ SystemPublisher = (*Control)(nil)

// Provides lists the events handled. Its publishes come through the
// enforcer (SystemPublisher), not as a hook of their own.
func (c *Control) Provides(b byte) bool { return b == mqtt.OnStarted }

// ---------------------------------------------------------------------------
// Topics.

// cfgTopic is a parsed $config or $enroll topic (or filter).
type cfgTopic struct {
	kind   string // policy, audit, audit-query, thing, claim, relation, invitation, answer, enroll, replies
	owner  string // users/{owner}, invitations/{user}
	thing  string
	place  string
	user   string // relations/{user}
	id     string // policy id, invitation id
	serial string
}

// parseCfg parses a concrete topic; ok is false for anything the control plane does not define.
func parseCfg(topic string) (cfgTopic, bool) {
	if serial, ok := strings.CutPrefix(topic, "$enroll/"); ok {
		if !validLevel(serial) || strings.Contains(serial, "/") {
			return cfgTopic{}, false
		}
		return cfgTopic{kind: "enroll", serial: serial}, true
	}
	rest, ok := strings.CutPrefix(topic, "$config/")
	if !ok {
		return cfgTopic{}, false
	}
	l := strings.Split(rest, "/")
	for _, x := range l {
		if !validLevel(x) {
			return cfgTopic{}, false
		}
	}
	switch {
	case l[0] == "replies":
		return cfgTopic{kind: "replies"}, true
	case l[0] == "users" && len(l) == 4 && l[2] == "policies":
		return cfgTopic{kind: "policy", owner: l[1], id: l[3]}, true
	case l[0] == "users" && len(l) == 3 && l[2] == "audit":
		return cfgTopic{kind: "audit", owner: l[1]}, true
	case l[0] == "users" && len(l) == 4 && l[2] == "audit" && l[3] == "query":
		return cfgTopic{kind: "audit-query", owner: l[1]}, true
	case l[0] == "things" && len(l) == 2:
		return cfgTopic{kind: "thing", thing: l[1]}, true
	case l[0] == "things" && len(l) == 3 && l[2] == "claim":
		return cfgTopic{kind: "claim", thing: l[1]}, true
	case l[0] == "things" && len(l) == 4 && l[2] == "relations":
		return cfgTopic{kind: "relation", thing: l[1], user: l[3]}, true
	case l[0] == "places" && len(l) == 4 && l[2] == "relations":
		return cfgTopic{kind: "relation", place: l[1], user: l[3]}, true
	case l[0] == "invitations" && len(l) == 3:
		return cfgTopic{kind: "invitation", owner: l[1], id: l[2]}, true
	case l[0] == "invitations" && len(l) == 4 && l[3] == "answer":
		return cfgTopic{kind: "answer", owner: l[1], id: l[2]}, true
	}
	return cfgTopic{}, false
}

func validLevel(s string) bool { return s != "" && !strings.ContainsAny(s, "+#\x00") }

// MayPublish admits users' publishes under $config (authorised and answered
// in OnPublish, so that a refusal is answered too) and a device's own
// enrolment request. Replies and invitations are the broker's to write.
func (c *Control) MayPublish(cl *mqtt.Client, p policies.Principal, topic string) (handled, allowed bool) {
	if !strings.HasPrefix(topic, "$config/") && !strings.HasPrefix(topic, "$enroll/") {
		return false, false
	}
	t, ok := parseCfg(topic)
	if !ok {
		return true, p.Kind == policies.KindUser && strings.HasPrefix(topic, "$config/") && !strings.HasPrefix(topic, "$config/replies/")
	}
	switch t.kind {
	case "enroll":
		return true, p.Kind == policies.KindDevice && p.ID == t.serial
	case "replies", "invitation", "audit":
		return true, false
	}
	return true, p.Kind == policies.KindUser
}

// MaySubscribe lets a user subscribe to what it may configure. A filter
// with a wildcard where the object goes is accepted and every message under
// it decided alone (MayDeliver), so refusing or accepting says nothing
// about whether an object exists.
func (c *Control) MaySubscribe(cl *mqtt.Client, p policies.Principal, filter string) (handled, allowed bool) {
	if strings.HasPrefix(filter, "$enroll") {
		return true, false
	}
	rest, ok := strings.CutPrefix(filter, "$config/")
	if !ok {
		return false, false
	}
	if p.Kind != policies.KindUser {
		return true, false
	}
	l := strings.Split(rest, "/")
	if l[0] == "#" || l[0] == "+" {
		return true, true
	}
	if len(l) < 2 || l[1] == "" {
		return true, false
	}
	if l[1] == "#" || l[1] == "+" {
		return true, l[0] == "users" || l[0] == "things" || l[0] == "places" || l[0] == "invitations"
	}
	return true, c.mayView(p, l[0], l[1])
}

// MayDeliver decides one $config message for one recipient.
func (c *Control) MayDeliver(cl *mqtt.Client, p policies.Principal, topic string) (handled, allowed bool) {
	if strings.HasPrefix(topic, "$enroll/") {
		return true, false
	}
	if !strings.HasPrefix(topic, "$config/") {
		return false, false
	}
	if !c.ready.Load() || p.Kind != policies.KindUser || !subscribedExplicitly(cl, topic) {
		return true, false
	}
	t, ok := parseCfg(topic)
	if !ok {
		return true, false
	}
	switch t.kind {
	case "policy", "audit":
		return true, c.mayView(p, "users", t.owner)
	case "invitation":
		return true, c.mayView(p, "invitations", t.owner)
	case "thing":
		return true, c.mayView(p, "things", t.thing)
	case "relation":
		if t.place != "" {
			return true, c.mayView(p, "places", t.place)
		}
		return true, c.mayView(p, "things", t.thing)
	}
	return true, false
}

// subscribedExplicitly reports whether one of the client's filters that
// starts with $config matches topic. Mochi lets "#" and "+/…" match $
// topics other than $SYS; MQTT says they must not, and configuration only
// goes to those who asked for it by name.
func subscribedExplicitly(cl *mqtt.Client, topic string) bool {
	for f := range cl.State.Subscriptions.GetAll() {
		f, _ = stripShare(f)
		if strings.HasPrefix(f, "$config/") && policies.MatchTopic(f, topic) {
			return true
		}
	}
	return false
}

// mayView decides whether p may see the configuration of one object.
func (c *Control) mayView(p policies.Principal, section, object string) bool {
	switch section {
	case "users", "invitations":
		return p.ID == object || c.isAdmin(p)
	case "things":
		return c.thingRole(p, object) != ""
	case "places":
		return c.placeRole(p, object) != ""
	}
	return false
}

func (c *Control) isAdmin(p policies.Principal) bool {
	if p.Kind != policies.KindUser {
		return false
	}
	u, ok := c.engine.User(p.ID)
	return ok && u.Admin
}

// thingRole is p's standing for configuring a thing: admin, owner,
// co_owner, installer (until hand-over), or "" (none, or no such thing).
func (c *Control) thingRole(p policies.Principal, thing string) string {
	if p.Kind != policies.KindUser || !validLevel(thing) || strings.Contains(thing, "/") {
		return ""
	}
	if _, ok := c.engine.Thing(thing); !ok {
		return ""
	}
	if c.isAdmin(p) {
		return "admin"
	}
	d := c.engine.Decide(policies.Request{Principal: p, Topic: "things/" + thing, Action: policies.ActConfigure})
	if d.Allowed() {
		switch d.Rule {
		case "owner", "co_owner", "installer":
			return d.Rule
		}
	}
	return ""
}

// placeRole is p's standing for configuring a place: admin, owner (its
// owner of record or an active owner relation on it or a place above it),
// co_owner, or "".
func (c *Control) placeRole(p policies.Principal, place string) string {
	pl, ok := c.engine.Place(place)
	if p.Kind != policies.KindUser || !ok {
		return ""
	}
	if c.isAdmin(p) {
		return "admin"
	}
	if pl.Owner == p.ID {
		return "owner"
	}
	now := c.clock.Now()
	role := ""
	for id, depth := place, 0; id != "" && depth < 16; depth++ {
		for _, r := range c.engine.Relationships("", id) {
			if r.User != p.ID || r.Status != policies.StatusActive || !inWindow(r, now) {
				continue
			}
			switch r.Relation {
			case policies.RelOwner:
				return "owner"
			case policies.RelCoOwner:
				role = "co_owner"
			}
		}
		next, ok := c.engine.Place(id)
		if !ok {
			break
		}
		id = next.Parent
	}
	return role
}

// fromTheBeginning is the start a new window keeps from a say that has none
// (a bootstrap file's relation without valid_from, in force from the first):
// the epoch, before any reading the broker took. A zero valid_from in an
// invitation means "from its acceptance".
var fromTheBeginning = time.Unix(0, 0).UTC()

// standing is when p's standing on a thing or place (whatever objectRole
// finds) began and ends: zero times for an admin or an owner of record;
// else the earliest start and the latest end of the relations in force
// that give p a say (on the object, on its place, on a place above), a
// zero time where one has none. Whoever has a say only from or until a
// time cannot give anyone a say before or beyond it: a newcomer could
// otherwise open the former tenant's history to someone else.
func (c *Control) standing(p policies.Principal, thing, place string) (from, until time.Time) {
	if c.isAdmin(p) {
		return time.Time{}, time.Time{}
	}
	now := c.clock.Now()
	endless, beginless, any := false, false, false
	consider := func(rs []policies.Relationship) {
		for _, r := range rs {
			if r.User != p.ID || r.Status != policies.StatusActive || !inWindow(r, now) {
				continue
			}
			switch r.Relation {
			case policies.RelOwner, policies.RelCoOwner, policies.RelInstaller:
				if r.ValidUntil.IsZero() {
					endless = true
				} else if r.ValidUntil.After(until) {
					until = r.ValidUntil
				}
				if r.ValidFrom.IsZero() {
					beginless = true
				} else if !any || r.ValidFrom.Before(from) {
					from = r.ValidFrom
				}
				any = true
			}
		}
	}
	if thing != "" {
		th, _ := c.engine.Thing(thing)
		if th.Owner == p.ID {
			return time.Time{}, time.Time{}
		}
		consider(c.engine.Relationships(thing, ""))
		place = th.Place
	}
	for depth := 0; place != "" && depth < 16; depth++ {
		pl, ok := c.engine.Place(place)
		if !ok {
			break
		}
		if pl.Owner == p.ID {
			return time.Time{}, time.Time{}
		}
		consider(c.engine.Relationships("", place))
		place = pl.Parent
	}
	if endless {
		until = time.Time{}
	}
	if beginless {
		from = time.Time{}
	}
	return from, until
}

func inWindow(r policies.Relationship, t time.Time) bool {
	return (r.ValidFrom.IsZero() || !t.Before(r.ValidFrom)) && (r.ValidUntil.IsZero() || !t.After(r.ValidUntil))
}

// ---------------------------------------------------------------------------
// Publishing, replies.

// result is the answer to one config publish.
type result struct {
	ok       bool
	err      string
	code     packets.Code
	warnings []string
	extra    map[string]any
}

func ok(extra map[string]any, warnings ...string) result {
	return result{ok: true, extra: extra, warnings: warnings}
}

func refuse(code packets.Code, format string, args ...any) result {
	return result{err: fmt.Sprintf(format, args...), code: code}
}

func notAuthorized() result { return result{err: errNotAuthorized, code: codeNotAuthorized} }

func invalid(err error) result { return result{err: err.Error(), code: codeInvalid} }

func unavailable(log zerolog.Logger, err error) result {
	log.Warn().Err(err).Msg("configuration refused: metadata store unavailable")
	return result{err: errUnavailable, code: codeUnavailable}
}

// OnPublish handles every client publish under $config and $enroll.
func (c *Control) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || (!strings.HasPrefix(pk.TopicName, "$config/") && !strings.HasPrefix(pk.TopicName, "$enroll/")) {
		return pk, nil
	}
	p, known := c.sessions.Principal(cl)
	var res result
	if !known {
		res = notAuthorized()
	} else {
		res = c.handle(cl, p, pk)
	}
	c.reply(cl, pk, res)
	if !res.ok && cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		// Answer with the reason code ourselves and have mochi drop the
		// packet (an error code returned from here would be logged by
		// mochi as a hook failure on every refusal).
		typ := packets.Puback
		if pk.FixedHeader.Qos == 2 {
			typ = packets.Pubrec
		}
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: pk.PacketID, ReasonCode: res.code.Code,
			Properties: packets.Properties{ReasonString: res.code.Reason}}
		if err := cl.WritePacket(ack); err != nil {
			c.log.Debug().Err(err).Str("client", cl.ID).Msg("writing a refusal")
		}
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

func (c *Control) handle(cl *mqtt.Client, p policies.Principal, pk packets.Packet) result {
	t, ok := parseCfg(pk.TopicName)
	if !ok {
		return refuse(codeInvalid, "unknown configuration topic %q", pk.TopicName)
	}
	if t.kind == "enroll" {
		return c.enroll(cl, p, t.serial, pk.Payload)
	}
	if p.Kind != policies.KindUser {
		return notAuthorized()
	}
	switch t.kind {
	case "claim":
		return c.claim(p, t, pk.Payload) // takes the lock after its argon2id
	case "audit-query":
		// Reads the audit trail only: a wide query (seconds against the
		// store) must not hold up everyone else's changes.
		return c.auditQuery(p, t, pk.Payload)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch t.kind {
	case "policy":
		return c.putPolicy(p, t, pk.Payload)
	case "thing":
		return c.putThing(p, t, pk.Payload)
	case "relation":
		if len(pk.Payload) == 0 {
			return c.revoke(p, t)
		}
		return c.invite(p, t, pk.Payload)
	case "answer":
		return c.answer(p, t, pk.Payload)
	}
	return notAuthorized()
}

// reply answers a config publish: on its v5 response topic (which must lie
// under the client's own $config/replies/{clientId}) with its correlation
// data, else on $config/replies/{clientId}.
func (c *Control) reply(cl *mqtt.Client, pk packets.Packet, res result) {
	body := map[string]any{"topic": pk.TopicName, "ok": res.ok}
	if res.err != "" {
		body["error"] = res.err
	}
	if len(res.warnings) > 0 {
		body["warnings"] = res.warnings
	}
	for k, v := range res.extra {
		body[k] = v
	}
	payload := marshal(body)
	own := "$config/replies/" + cl.ID
	topic := own
	var props packets.Properties
	if cl.Properties.ProtocolVersion == 5 {
		if rt := pk.Properties.ResponseTopic; rt == own || strings.HasPrefix(rt, own+"/") {
			topic = rt
		}
		props.CorrelationData = pk.Properties.CorrelationData
	}
	c.publish(topic, payload, false, props)
}

// publish sends a broker-written message through the control plane's inline client.
func (c *Control) publish(topic string, payload []byte, retain bool, props packets.Properties) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: retain},
		TopicName:   topic, Payload: payload, PacketID: 1, Properties: props,
	}
	if err := c.server.InjectPacket(c.inline, pk); err != nil {
		c.log.Warn().Err(err).Str("topic", topic).Msg("control plane publish failed")
	}
}

// forgetRetained deletes the retained messages of the thing id under
// things/{id}/{under}: they are its last data subject's, and go neither
// to a new owner after the hand-over (its readings) nor to a thing
// re-created under the id (everything). Deleted the MQTT way (an empty
// retained publish), so the state store forgets them too and a subscriber
// allowed raw sees them cleared.
func (c *Control) forgetRetained(id, under string) {
	prefix := "things/" + id + "/" + under
	for topic := range c.server.Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, prefix) {
			c.publish(topic, nil, true, packets.Properties{})
		}
	}
}

// retain sets (or with a nil doc, deletes) a retained configuration message.
func (c *Control) retain(topic string, doc any) {
	var payload []byte
	if doc != nil {
		payload = marshal(doc)
	}
	c.publish(topic, payload, true, packets.Properties{})
}

// marshal encodes v as compact JSON without HTML escaping ("must be > 0",
// not "must be \u003e 0").
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// PublishAudit sends a flushed audit batch live to its owner.
func (c *Control) PublishAudit(owner string, payload []byte) {
	c.publish("$config/users/"+owner+"/audit", payload, false, packets.Properties{})
}

func (c *Control) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

// decodeStrict decodes one JSON object into v, refusing unknown fields,
// duplicate keys and trailing data, and anything but an object (null would
// decode as an empty document: a thing's kind, streams and place wiped).
func decodeStrict(data []byte, v any) error {
	if err := objectWithoutDuplicates(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return fmt.Errorf("%s: must be %s", ute.Field, jsonKind(ute.Type.Kind().String()))
		}
		if s, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return fmt.Errorf("%s: unknown field", strings.Trim(s, `"`))
		}
		return fmt.Errorf("not a JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// objectWithoutDuplicates checks that data starts with a JSON object in
// which no object, at any depth, repeats a key (in any case): encoding/json keeps the
// last of two, so {"relation":"visitor","relation":"owner"} would read as
// an owner where a reader of the first key sees a visitor.
func objectWithoutDuplicates(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not a JSON object: %v", err)
	}
	if tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	return membersWithoutDuplicates(dec, "", true)
}

// membersWithoutDuplicates reads an object's members up to its closing
// brace (the opening one read), path naming it in errors. fields says the
// object's keys are a document's fields, which encoding/json matches
// ignoring case ("Relation" is "relation"); deeper objects are maps here
// (attributes), whose keys are distinct as written.
func membersWithoutDuplicates(dec *json.Decoder, path string, fields bool) error {
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("not a JSON object: %v", err)
		}
		key, _ := tok.(string)
		name := key
		if path != "" {
			name = path + "." + key
		}
		folded := key
		if fields {
			folded = foldKey(key)
		}
		if seen[folded] {
			return fmt.Errorf("%s: duplicate key", name)
		}
		seen[folded] = true
		if err := valueWithoutDuplicates(dec, name); err != nil {
			return err
		}
	}
	_, err := dec.Token() // the closing brace
	return err
}

func valueWithoutDuplicates(dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not a JSON object: %v", err)
	}
	switch tok {
	case json.Delim('{'):
		return membersWithoutDuplicates(dec, path, false)
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if err := valueWithoutDuplicates(dec, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err = dec.Token() // the closing bracket
		return err
	}
	return nil
}

// foldKey folds key as encoding/json does when it matches a key to a
// field (strings.EqualFold): each rune to the least of its case orbit, so
// "ſtreams" (long s) is "streams" too.
func foldKey(key string) string {
	var b strings.Builder
	for _, r := range key {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "a number"
}

// ---------------------------------------------------------------------------
// Policies.

func (c *Control) putPolicy(p policies.Principal, t cfgTopic, payload []byte) result {
	if p.ID != t.owner && !c.isAdmin(p) {
		return notAuthorized()
	}
	topic := "$config/users/" + t.owner + "/policies/" + t.id
	ctx, cancel := c.ctx()
	defer cancel()
	if len(payload) == 0 {
		if !slices.ContainsFunc(c.engine.Policies(t.owner), func(x policies.Policy) bool { return x.ID == t.id }) {
			return refuse(codeInvalid, "policy %q: not found", t.id)
		}
		if err := c.store.DeletePolicy(ctx, t.owner, t.id); err != nil && !errors.Is(err, mongo.ErrNotFound) {
			return unavailable(c.log, err)
		}
		c.engine.DeletePolicy(t.owner, t.id)
		c.retain(topic, nil)
		c.log.Info().Str("owner", t.owner).Str("policy", t.id).Str("by", p.ID).Msg("policy deleted")
		return ok(nil)
	}
	pol, err := policies.ParsePolicy(payload)
	if err != nil {
		return invalid(err)
	}
	if pol.ID != t.id {
		return refuse(codeInvalid, "id: must be %q, the last level of the topic", t.id)
	}
	warnings := c.engine.Warnings(t.owner, pol)
	if err := c.store.PutPolicy(ctx, t.owner, pol); err != nil {
		return unavailable(c.log, err)
	}
	if err := c.engine.PutPolicy(t.owner, pol); err != nil {
		// Cannot happen for a parsed policy; keep the store as the engine
		// is (on a context of its own: the change's may have run out).
		uctx, cancel := c.ctx()
		defer cancel()
		if old, ok := c.policy(t.owner, pol.ID); ok {
			_ = c.store.PutPolicy(uctx, t.owner, old)
		} else {
			_ = c.store.DeletePolicy(uctx, t.owner, pol.ID)
		}
		return invalid(err)
	}
	c.retain(topic, pol)
	c.log.Info().Str("owner", t.owner).Str("policy", t.id).Str("by", p.ID).Msg("policy stored")
	return ok(nil, warnings...)
}

// ---------------------------------------------------------------------------
// Thing documents.

// thingDoc is the document on $config/things/{thing}.
type thingDoc struct {
	ID         string              `json:"id,omitempty"`
	Owner      string              `json:"owner,omitempty"`
	Kind       string              `json:"kind,omitempty"`
	Streams    []string            `json:"streams,omitempty"`
	Attributes policies.Attributes `json:"attributes,omitempty"`
	Place      string              `json:"place,omitempty"`
}

func docOf(t policies.Thing) thingDoc {
	return thingDoc{ID: t.ID, Owner: t.Owner, Kind: t.Kind, Streams: t.Streams, Attributes: t.Attributes, Place: t.Place}
}

func (c *Control) putThing(p policies.Principal, t cfgTopic, payload []byte) result {
	role := c.thingRole(p, t.thing)
	if role == "" {
		return notAuthorized()
	}
	cur, _ := c.engine.Thing(t.thing)
	topic := "$config/things/" + t.thing
	ctx, cancel := c.ctx()
	defer cancel()
	if len(payload) == 0 {
		if role == "installer" {
			return notAuthorized()
		}
		return c.deleteThing(ctx, p, cur)
	}
	var doc thingDoc
	if err := decodeStrict(payload, &doc); err != nil {
		return invalid(err)
	}
	var probs []string
	if doc.ID != "" && doc.ID != t.thing {
		probs = append(probs, fmt.Sprintf("id: must be %q, the last level of the topic", t.thing))
	}
	if doc.Owner != "" && doc.Owner != cur.Owner {
		probs = append(probs, "owner: cannot be changed here (hand a thing over with an owner invitation)")
	}
	switch doc.Kind {
	case "", "sensor", "actuator", "gateway":
	default:
		probs = append(probs, fmt.Sprintf("kind: unknown kind %q (want sensor, actuator or gateway)", doc.Kind))
	}
	for i, s := range doc.Streams {
		if !validLevel(s) || strings.Contains(s, "/") {
			probs = append(probs, fmt.Sprintf("streams[%d]: must be a non-empty MQTT topic level", i))
		}
	}
	attrs, err := doc.Attributes.Normalize()
	if err != nil {
		probs = append(probs, "attributes: "+err.Error())
	}
	if doc.Place != cur.Place {
		// Relations on a place hold for the things in it: who links a thing
		// to a place gives the place's owners and co-owners rights on it,
		// and who unlinks it takes them away. Only the thing's owner does,
		// so an installer or a co-owner cannot keep rights through a place
		// of their own after the hand-over or their revocation. The owner
		// of record, that is: an owner by relation may have it for a night.
		switch {
		case role != "admin" && cur.Owner != p.ID:
			probs = append(probs, fmt.Sprintf("place: only the thing's owner of record may change it (it is %q)", cur.Place))
		case doc.Place != "" && c.placeRole(p, doc.Place) == "":
			probs = append(probs, fmt.Sprintf("place: no place %q that you may configure", doc.Place))
		}
	}
	if len(probs) > 0 {
		return refuse(codeInvalid, "%s", strings.Join(probs, "; "))
	}
	next := policies.Thing{ID: t.thing, Owner: cur.Owner, Kind: doc.Kind, Streams: doc.Streams, Attributes: attrs, Place: doc.Place}
	if err := c.store.PutThing(ctx, next, ""); err != nil {
		return unavailable(c.log, err)
	}
	if err := c.engine.PutThing(next); err != nil {
		uctx, cancel := c.ctx() // the change's own may have run out
		defer cancel()
		_ = c.store.PutThing(uctx, cur, "")
		return invalid(err)
	}
	c.retain(topic, docOf(next))
	c.log.Info().Str("thing", t.thing).Str("by", p.ID).Msg("thing document stored")
	return ok(nil)
}

// deleteThing removes a thing, its relations, its pending invitations, its
// claim code and its secret, and retires the serial it enrolled with: an
// invitation to it, or its serial enrolled again, must not give anyone a
// say over a thing that comes back under the same id.
func (c *Control) deleteThing(ctx context.Context, p policies.Principal, t policies.Thing) result {
	// The relations go from the store before the thing (put back if one
	// cannot go): a relation left behind would hold for a thing re-created
	// under the same id.
	rels := c.engine.Relationships(t.ID, "")
	var deleted []policies.Relationship
	putBack := func(err error) result {
		uctx, cancel := c.ctx() // the change's own may be what ran out
		defer cancel()
		for _, x := range deleted {
			_ = c.store.PutRelationship(uctx, x)
		}
		return unavailable(c.log, err)
	}
	for _, r := range rels {
		if err := c.store.DeleteRelationship(ctx, t.ID, "", r.User, r.Relation); err != nil && !errors.Is(err, mongo.ErrNotFound) {
			return putBack(err)
		}
		deleted = append(deleted, r)
	}
	if err := c.store.RetireFactoryOf(ctx, t.ID, c.clock.Now()); err != nil {
		return putBack(err)
	}
	if err := c.store.DeleteThing(ctx, t.ID); err != nil && !errors.Is(err, mongo.ErrNotFound) {
		return putBack(err)
	}
	if _, err := c.store.DeleteClaim(ctx, t.ID); err != nil {
		c.log.Warn().Err(err).Str("thing", t.ID).Msg("claim code of a deleted thing left in the store")
	}
	c.endInvitations(ctx, "thing:"+t.ID, "", "revoked")
	for _, r := range rels {
		c.engine.DeleteRelationship(t.ID, "", r.User, r.Relation)
		c.retain("$config/things/"+t.ID+"/relations/"+r.User, nil)
		c.record(ctx, r, string(r.Status), "ended", p.ID, "thing deleted", "")
	}
	c.engine.DeleteThing(t.ID)
	c.creds.Delete("thing:" + t.ID)
	c.forgetRetained(t.ID, "")
	c.retain("$config/things/"+t.ID, nil)
	c.log.Info().Str("thing", t.ID).Str("by", p.ID).Msg("thing deleted")
	return ok(nil)
}

// policy returns owner's policy id as the engine has it.
func (c *Control) policy(owner, id string) (policies.Policy, bool) {
	for _, p := range c.engine.Policies(owner) {
		if p.ID == id {
			return p, true
		}
	}
	return policies.Policy{}, false
}

// ---------------------------------------------------------------------------
// Relations, invitations.

// relationDoc is the document on …/relations/{user}.
type relationDoc struct {
	Relation   string `json:"relation"`
	Status     string `json:"status,omitempty"`
	ValidFrom  string `json:"valid_from,omitempty"`
	ValidUntil string `json:"valid_until,omitempty"`
	Invitation string `json:"invitation,omitempty"`
	InvitedBy  string `json:"invited_by,omitempty"`
}

func relTopic(r policies.Relationship) string {
	if r.Place != "" {
		return "$config/places/" + r.Place + "/relations/" + r.User
	}
	return "$config/things/" + r.Thing + "/relations/" + r.User
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano) // a start set at acceptance has a fraction
}

func relDoc(r policies.Relationship, inv *mongo.Invitation) relationDoc {
	d := relationDoc{Relation: string(r.Relation), Status: string(r.Status), ValidFrom: fmtTime(r.ValidFrom), ValidUntil: fmtTime(r.ValidUntil)}
	if inv != nil {
		d.Invitation, d.InvitedBy = inv.ID, inv.Inviter
	}
	return d
}

// invitationDoc is the document on $config/invitations/{user}/{id}.
type invitationDoc struct {
	ID         string `json:"id"`
	Thing      string `json:"thing,omitempty"`
	Place      string `json:"place,omitempty"`
	Relation   string `json:"relation"`
	From       string `json:"from"`
	ValidFrom  string `json:"valid_from,omitempty"`
	ValidUntil string `json:"valid_until,omitempty"`
	Expires    string `json:"expires"`
	Status     string `json:"status"`
}

func invDoc(inv mongo.Invitation) invitationDoc {
	return invitationDoc{ID: inv.ID, Thing: inv.Thing, Place: inv.Place, Relation: inv.Relation, From: inv.Inviter,
		ValidFrom: inv.ValidFrom, ValidUntil: inv.ValidUntil, Expires: fmtTime(inv.Expires), Status: inv.Status}
}

func invTopic(inv mongo.Invitation) string {
	return "$config/invitations/" + inv.Invitee + "/" + inv.ID
}

// objectRole is p's standing on the object of t (a thing or a place).
func (c *Control) objectRole(p policies.Principal, thing, place string) string {
	if place != "" {
		return c.placeRole(p, place)
	}
	return c.thingRole(p, thing)
}

// mayGrant reports whether role may invite someone into relation rel.
func mayGrant(role string, rel policies.Relation) bool {
	switch role {
	case "admin", "owner", "co_owner":
		return rel == policies.RelOwner || rel == policies.RelCoOwner || rel == policies.RelVisitor
	case "installer":
		return rel == policies.RelOwner
	}
	return false
}

func (c *Control) invite(p policies.Principal, t cfgTopic, payload []byte) result {
	role := c.objectRole(p, t.thing, t.place)
	if role == "" {
		return notAuthorized()
	}
	var doc relationDoc
	if err := decodeStrict(payload, &doc); err != nil {
		return invalid(err)
	}
	var probs []string
	rel := policies.Relation(doc.Relation)
	switch {
	case doc.Relation == "":
		probs = append(probs, "relation: is required")
	case !rel.Valid():
		probs = append(probs, fmt.Sprintf("relation: unknown relation %q (want owner, co_owner or visitor)", doc.Relation))
	case rel == policies.RelInstaller:
		probs = append(probs, "relation: an installer relation is gained by claiming the thing with its claim code")
	case !mayGrant(role, rel):
		if role == "installer" {
			probs = append(probs, "relation: an installer may only invite the owner")
		} else {
			probs = append(probs, fmt.Sprintf("relation: a %s may not invite a %s", role, rel))
		}
	}
	if doc.Status != "" || doc.Invitation != "" || doc.InvitedBy != "" {
		probs = append(probs, "status, invitation and invited_by are set by the broker")
	}
	var from, until time.Time
	var err error
	if doc.ValidFrom != "" {
		if from, err = policies.ParseTime(doc.ValidFrom); err != nil {
			probs = append(probs, "valid_from: "+err.Error())
		}
	}
	if doc.ValidUntil != "" {
		if until, err = policies.ParseTime(doc.ValidUntil); err != nil {
			probs = append(probs, "valid_until: "+err.Error())
		}
	} else if rel == policies.RelVisitor {
		probs = append(probs, "valid_until: is required for a visitor (a visit has a time window)")
	}
	if !from.IsZero() && !until.IsZero() && until.Before(from) {
		probs = append(probs, "valid_until: must not be before valid_from")
	}
	if !until.IsZero() && until.Before(c.clock.Now()) {
		probs = append(probs, "valid_until: lies in the past")
	}
	if t.user == p.ID {
		probs = append(probs, "user: you cannot invite yourself")
	}
	if rel == policies.RelOwner && t.thing != "" {
		// A thing without an owner of record is handed over by this
		// invitation: its owner of record has no end, and nobody would
		// operate it until a later start.
		if th, _ := c.engine.Thing(t.thing); th.Owner == "" && (!until.IsZero() || from.After(c.clock.Now())) {
			probs = append(probs, "valid_from, valid_until: the thing has no owner yet; handing it over starts now and has no end")
		}
	}
	start, end := c.standing(p, t.thing, t.place)
	if !end.IsZero() && (until.IsZero() || until.After(end)) {
		probs = append(probs, fmt.Sprintf("valid_until: must be no later than %s, when your own say over it ends", fmtTime(end)))
	}
	if !start.IsZero() && !from.IsZero() && from.Before(start) {
		if rel == policies.RelVisitor {
			// A visit from 18:00 by a co-owner since 20:00 (the case
			// study) starts at 20:00: an owner's policy for visitors
			// is decided as of each reading's time too.
			from = start
		} else {
			probs = append(probs, fmt.Sprintf("valid_from: must be no earlier than %s, when your own say over it began", fmtTime(start)))
		}
	}
	if len(probs) > 0 {
		return refuse(codeInvalid, "%s", strings.Join(probs, "; "))
	}
	if handOver := rel == policies.RelOwner && t.thing != "" && func() bool { th, _ := c.engine.Thing(t.thing); return th.Owner == "" }(); from.IsZero() && !handOver &&
		(rel == policies.RelOwner || rel == policies.RelCoOwner) {
		// A new window for one who holds an owner's or co-owner's say
		// already (a promotion too) keeps its start: accepted, a
		// relation without one starts then, and she would lose the
		// history of her say so far. Of a say she holds now, or of a
		// window pending for her (a correction of a new window, which
		// put the one she held aside); never a start to come, nor one
		// from before the inviter's own (raised to it: he could give no
		// earlier).
		now := c.clock.Now()
		for _, x := range c.engine.Relationships(t.thing, t.place) {
			if x.User == t.user && (x.Relation == policies.RelOwner || x.Relation == policies.RelCoOwner) &&
				(x.Status == policies.StatusActive && inWindow(x, now) || x.Status == policies.StatusPending && !x.ValidFrom.IsZero() && !x.ValidFrom.After(now)) {
				s := x.ValidFrom
				if s.IsZero() {
					// A say without a start (a bootstrap file's) holds
					// from the beginning; zero would start at acceptance.
					s = fromTheBeginning
				}
				if !start.IsZero() && s.Before(start) {
					s = start // raised to the earliest he could give
				}
				if from.IsZero() || s.Before(from) {
					from = s
				}
			}
		}
	}

	now := c.clock.Now()
	id, err := randomID(10)
	if err != nil {
		return unavailable(c.log, err)
	}
	r := policies.Relationship{Thing: t.thing, Place: t.place, User: t.user, Relation: rel, Status: policies.StatusPending,
		ValidFrom: from, ValidUntil: until}
	inv := mongo.Invitation{ID: id, Invitee: t.user, Object: r.Object(), Thing: t.thing, Place: t.place, Relation: string(rel),
		Inviter: p.ID, ValidFrom: fmtTime(from), ValidUntil: fmtTime(until), Created: now, Expires: now.Add(c.ttl),
		Status: string(policies.StatusPending)}
	ctx, cancel := c.ctx()
	defer cancel()
	// A failed write may have landed (its reply lost): whatever failed,
	// the invitation is revoked and the relation put back as it was, on a
	// context of its own (the change's is likely what ran out). Else the
	// invitee could accept it, or, as a pending relation without an
	// invitation, get one from no inviter at the next start (Reseed).
	var before *policies.Relationship
	for _, x := range c.engine.Relationships(t.thing, t.place) {
		if x.User == r.User && x.Relation == r.Relation {
			before = &x
		}
	}
	revoke := func(err error) result {
		uctx, cancel := c.ctx()
		defer cancel()
		if _, uerr := c.store.SetInvitationStatus(uctx, id, "pending", "revoked"); uerr != nil {
			c.log.Warn().Err(uerr).Str("invitation", id).Msg("refused invitation not revoked in the store")
		}
		var uerr error
		if before != nil {
			uerr = c.store.PutRelationship(uctx, *before)
		} else if uerr = c.store.DeleteRelationship(uctx, r.Thing, r.Place, r.User, r.Relation); errors.Is(uerr, mongo.ErrNotFound) {
			uerr = nil
		}
		if uerr != nil {
			c.log.Warn().Err(uerr).Str("object", r.Object()).Str("user", r.User).Msg("refused invitation's relation not put back in the store")
		}
		return unavailable(c.log, err)
	}
	if err := c.store.PutInvitation(ctx, inv); err != nil {
		return revoke(err)
	}
	if err := c.store.PutRelationship(ctx, r); err != nil {
		return revoke(err)
	}
	c.record(ctx, r, "", "pending", p.ID, "invited", id)
	_ = c.engine.PutRelationship(r)
	c.retain(relTopic(r), relDoc(r, &inv))
	c.retain(invTopic(inv), invDoc(inv))
	c.log.Info().Str("object", r.Object()).Str("user", r.User).Str("relation", string(rel)).Str("by", p.ID).Msg("invitation sent")
	return ok(map[string]any{"invitation": id})
}

// revoke ends every relation of t.user on the object: any owner or
// co-owner may revoke any relation, an installer the invitations it may
// make, and anybody their own.
func (c *Control) revoke(p policies.Principal, t cfgTopic) result {
	role := c.objectRole(p, t.thing, t.place)
	var mine []policies.Relationship
	for _, r := range c.engine.Relationships(t.thing, t.place) {
		if r.User == t.user {
			mine = append(mine, r)
		}
	}
	allowed := role == "admin" || role == "owner" || role == "co_owner" || (p.ID == t.user && len(mine) > 0)
	if role == "installer" {
		allowed = true
		for _, r := range mine {
			if r.Relation != policies.RelOwner || r.Status != policies.StatusPending {
				allowed = p.ID == t.user
			}
		}
	}
	if !allowed {
		return notAuthorized()
	}
	if len(mine) == 0 {
		return refuse(codeInvalid, "relations/%s: no relation to revoke", t.user)
	}
	ctx, cancel := c.ctx()
	defer cancel()
	if err := c.store.Ping(ctx); err != nil {
		return unavailable(c.log, err)
	}
	// All of them go from the store before any goes from the engine, and
	// those gone are put back if one cannot go: a refusal leaves the
	// relations as they were, not some of them revoked.
	for i, r := range mine {
		if err := c.store.DeleteRelationship(ctx, r.Thing, r.Place, r.User, r.Relation); err != nil && !errors.Is(err, mongo.ErrNotFound) {
			uctx, cancel := c.ctx() // the change's own may be what ran out
			defer cancel()
			for _, x := range mine[:i] {
				if err := c.store.PutRelationship(uctx, x); err != nil {
					c.log.Warn().Err(err).Str("object", x.Object()).Str("user", x.User).Msg("relation not put back after a failed revocation")
				}
			}
			return unavailable(c.log, err)
		}
	}
	for _, r := range mine {
		c.engine.DeleteRelationship(r.Thing, r.Place, r.User, r.Relation)
		c.record(ctx, r, string(r.Status), "revoked", p.ID, "revoked", "")
	}
	c.endInvitations(ctx, policies.Relationship{Thing: t.thing, Place: t.place, User: t.user}.Object(), t.user, "revoked")
	c.retain(relTopic(mine[0]), nil)
	c.log.Info().Str("object", mine[0].Object()).Str("user", t.user).Str("by", p.ID).Msg("relation revoked")
	return ok(nil)
}

// endInvitations closes the pending invitations of user ("": anyone's) on
// object.
func (c *Control) endInvitations(ctx context.Context, object, user, status string) {
	invs, err := c.store.Invitations(ctx, "pending")
	if err != nil {
		c.log.Warn().Err(err).Msg("reading pending invitations")
		return
	}
	for _, inv := range invs {
		if inv.Object == object && (user == "" || inv.Invitee == user) {
			if changed, err := c.store.SetInvitationStatus(ctx, inv.ID, "pending", status); err == nil && changed {
				c.retain(invTopic(inv), nil)
			}
		}
	}
}

func (c *Control) answer(p policies.Principal, t cfgTopic, payload []byte) result {
	if p.ID != t.owner {
		return notAuthorized()
	}
	var doc struct {
		Accept *bool `json:"accept"`
	}
	if err := decodeStrict(payload, &doc); err != nil {
		return invalid(err)
	}
	if doc.Accept == nil {
		return refuse(codeInvalid, "accept: is required (true or false)")
	}
	ctx, cancel := c.ctx()
	defer cancel()
	inv, found, err := c.store.Invitation(ctx, t.id)
	if err != nil {
		return unavailable(c.log, err)
	}
	if !found || inv.Invitee != p.ID {
		return refuse(codeInvalid, "invitation %q: not found", t.id)
	}
	if inv.Status != "pending" {
		return refuse(codeInvalid, "invitation %q: already %s", t.id, inv.Status)
	}
	r, err := relationOf(inv)
	if err != nil {
		return invalid(err)
	}
	now := c.clock.Now()
	if now.After(inv.Expires) {
		c.expire(ctx, inv)
		return refuse(codeInvalid, "invitation %q: expired at %s", t.id, fmtTime(inv.Expires))
	}
	if !*doc.Accept {
		if changed, err := c.store.SetInvitationStatus(ctx, inv.ID, "pending", "declined"); err != nil {
			return unavailable(c.log, err)
		} else if !changed {
			return refuse(codeInvalid, "invitation %q: already answered", t.id)
		}
		c.dropPending(ctx, r)
		c.record(ctx, r, "pending", "declined", p.ID, "declined", inv.ID)
		c.retain(invTopic(inv), nil)
		return ok(nil)
	}
	// The inviter must still be entitled to grant it, for as long as it
	// lasts (the inviter's own window may have been shortened since), and
	// from no earlier than his own say now begins: a start before it
	// (given, or kept from the invitee's say) is raised to it.
	if inv.Inviter != "" {
		inviter := policies.UserPrincipal(inv.Inviter)
		start, end := c.standing(inviter, r.Thing, r.Place)
		if !mayGrant(c.objectRole(inviter, r.Thing, r.Place), r.Relation) || !end.IsZero() && (r.ValidUntil.IsZero() || r.ValidUntil.After(end)) {
			return refuse(codeInvalid, "invitation %q: no longer valid (%s may no longer grant it)", t.id, inv.Inviter)
		}
		if !start.IsZero() && !r.ValidFrom.IsZero() && r.ValidFrom.Before(start) {
			if !r.ValidUntil.IsZero() && r.ValidUntil.Before(start) {
				return refuse(codeInvalid, "invitation %q: no longer valid (it ends before %s's say begins)", t.id, inv.Inviter)
			}
			r.ValidFrom = start
		}
	}
	// The store first, each write undone if a later one fails, so that a
	// refusal leaves everything as it was; then the engine.
	var undo []func(context.Context)
	rollback := func(err error) result {
		uctx, cancel := c.ctx() // the change's own may be what ran out
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i](uctx)
		}
		return unavailable(c.log, err)
	}
	if changed, err := c.store.SetInvitationStatus(ctx, inv.ID, "pending", "accepted"); err != nil {
		return unavailable(c.log, err)
	} else if !changed {
		return refuse(codeInvalid, "invitation %q: already answered", t.id)
	}
	undo = append(undo, func(ctx context.Context) { _, _ = c.store.SetInvitationStatus(ctx, inv.ID, "accepted", "pending") })
	r.Status = policies.StatusActive
	startsNow := !now.Before(r.ValidFrom) // zero, or already begun
	if r.ValidFrom.IsZero() {
		// A relation starts when it is accepted: history decides
		// each reading as of its time, and the readings before were the
		// household's as it was then (the flat's former tenant's), not
		// the newcomer's. An owner shares older ones by a policy.
		r.ValidFrom = now.UTC() // the store keeps it to the nanosecond
	}
	if err := c.store.PutRelationship(ctx, r); err != nil {
		return rollback(err)
	}
	undo = append(undo, func(ctx context.Context) {
		pending := r
		pending.Status = policies.StatusPending
		_ = c.store.PutRelationship(ctx, pending)
	})
	// Hand-over: the first owner becomes the owner of record, and the
	// installers' access ends (the engine ends it anyway once an owner is
	// in force; the relations go so that nothing stale is shown).
	var thing policies.Thing
	var newOwner bool
	var ended []policies.Relationship
	if r.Relation == policies.RelOwner && r.Thing != "" {
		thing, _ = c.engine.Thing(r.Thing)
		// Only an owner without end, in force now, becomes the owner of
		// record (which has no end): an owner for one night stays an owner
		// by relation, and ends with it.
		if thing.Owner == "" && r.ValidUntil.IsZero() && startsNow {
			before := thing
			thing.Owner = r.User
			newOwner = true
			// A place the thing was linked to before (by an admin, or by an
			// older Veil that let installers link) must not keep anyone's
			// rights on it that the new owner did not choose.
			if thing.Place != "" && c.placeRole(policies.UserPrincipal(r.User), thing.Place) == "" {
				thing.Place = ""
			}
			if err := c.store.PutThing(ctx, thing, ""); err != nil {
				return rollback(err)
			}
			undo = append(undo, func(ctx context.Context) { _ = c.store.PutThing(ctx, before, "") })
		}
		// The installers go once the thing has an owner of record, not
		// for an owner by relation only (a relation of a bootstrap file
		// with a window): the thing would be left to nobody.
		for _, x := range c.engine.Relationships(r.Thing, "") {
			if x.Relation == policies.RelInstaller && thing.Owner != "" {
				ended = append(ended, x)
			}
		}
	}
	// The invitee's other relations on the object are replaced: a co-owner
	// who accepts to be a visitor is not a co-owner again after a restart.
	for _, x := range c.engine.Relationships(r.Thing, r.Place) {
		if x.User == r.User && x.Relation != r.Relation {
			ended = append(ended, x)
		}
	}
	for _, x := range ended {
		if err := c.store.DeleteRelationship(ctx, x.Thing, x.Place, x.User, x.Relation); err != nil && !errors.Is(err, mongo.ErrNotFound) {
			return rollback(err)
		}
		undo = append(undo, func(ctx context.Context) { _ = c.store.PutRelationship(ctx, x) })
	}
	c.record(ctx, r, "pending", "active", p.ID, "accepted", inv.ID)
	_ = c.engine.PutRelationship(r)
	if newOwner {
		_ = c.engine.PutThing(thing)
		c.retain("$config/things/"+thing.ID, docOf(thing))
		// The installer's readings go; the device's state (online,
		// locked) stays, for the new owner to operate it by: the most it
		// tells of anyone is that the installer moved the lock.
		c.forgetRetained(thing.ID, "data/")
	}
	for _, x := range ended {
		c.engine.DeleteRelationship(x.Thing, x.Place, x.User, x.Relation)
		reason := "replaced"
		if x.Relation == policies.RelInstaller {
			reason = "hand-over to " + r.User
		}
		c.record(ctx, x, string(x.Status), "ended", p.ID, reason, inv.ID)
		if x.User != r.User {
			c.retain(relTopic(x), nil)
		}
	}
	inv.Status = "accepted"
	c.retain(relTopic(r), relDoc(r, &inv))
	c.retain(invTopic(inv), nil)
	c.log.Info().Str("object", r.Object()).Str("user", r.User).Str("relation", string(r.Relation)).Msg("invitation accepted")
	return ok(nil)
}

func relationOf(inv mongo.Invitation) (policies.Relationship, error) {
	r := policies.Relationship{Thing: inv.Thing, Place: inv.Place, User: inv.Invitee, Relation: policies.Relation(inv.Relation), Status: policies.StatusPending}
	var err error
	if inv.ValidFrom != "" {
		if r.ValidFrom, err = policies.ParseTime(inv.ValidFrom); err != nil {
			return r, fmt.Errorf("valid_from: %w", err)
		}
	}
	if inv.ValidUntil != "" {
		if r.ValidUntil, err = policies.ParseTime(inv.ValidUntil); err != nil {
			return r, fmt.Errorf("valid_until: %w", err)
		}
	}
	return r, nil
}

// dropPending removes a pending relationship an invitation created.
func (c *Control) dropPending(ctx context.Context, r policies.Relationship) {
	for _, x := range c.engine.Relationships(r.Thing, r.Place) {
		if x.User == r.User && x.Relation == r.Relation && x.Status == policies.StatusPending {
			if err := c.store.DeleteRelationship(ctx, r.Thing, r.Place, r.User, r.Relation); err != nil && !errors.Is(err, mongo.ErrNotFound) {
				c.log.Warn().Err(err).Msg("pending relation left in the store")
			}
			c.engine.DeleteRelationship(r.Thing, r.Place, r.User, r.Relation)
			c.retain(relTopic(r), nil)
		}
	}
}

// expire closes an invitation whose time is up.
func (c *Control) expire(ctx context.Context, inv mongo.Invitation) {
	changed, err := c.store.SetInvitationStatus(ctx, inv.ID, "pending", "expired")
	if err != nil || !changed {
		return
	}
	if r, err := relationOf(inv); err == nil {
		c.dropPending(ctx, r)
		c.record(ctx, r, "pending", "expired", "", "invitation expired", inv.ID)
	}
	c.retain(invTopic(inv), nil)
	c.log.Info().Str("invitation", inv.ID).Str("object", inv.Object).Msg("invitation expired")
}

// ExpireInvitations closes every pending invitation past its expiry.
func (c *Control) ExpireInvitations() {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 4*c.timeout)
	defer cancel()
	invs, err := c.store.Invitations(ctx, "pending")
	if err != nil {
		return
	}
	now := c.clock.Now()
	for _, inv := range invs {
		if now.After(inv.Expires) {
			c.expire(ctx, inv)
		}
	}
}

// record appends a transition; a failure is logged (the change itself stands).
func (c *Control) record(ctx context.Context, r policies.Relationship, from, to, by, reason, inv string) {
	err := c.store.RecordTransition(ctx, mongo.Transition{At: c.clock.Now(), Object: r.Object(), User: r.User,
		Relation: string(r.Relation), From: from, To: to, By: by, Reason: reason, Invitation: inv})
	if err != nil {
		c.log.Warn().Err(err).Str("object", r.Object()).Str("user", r.User).Msg("transition not recorded")
	}
}

// ---------------------------------------------------------------------------
// Audit queries.

const maxAuditRecords = 1000

func (c *Control) auditQuery(p policies.Principal, t cfgTopic, payload []byte) result {
	if p.ID != t.owner && !c.isAdmin(p) {
		return notAuthorized()
	}
	if c.audit == nil {
		return refuse(codeInvalid, "the audit trail is off")
	}
	var q struct {
		Since string `json:"since"`
		Until string `json:"until"`
	}
	if len(payload) > 0 {
		if err := decodeStrict(payload, &q); err != nil {
			return invalid(err)
		}
	}
	now := c.clock.Now()
	since, err := timeOrAgo(q.Since, now, now.Add(-time.Hour))
	if err != nil {
		return refuse(codeInvalid, "since: %v", err)
	}
	until, err := timeOrAgo(q.Until, now, now.Add(time.Minute))
	if err != nil {
		return refuse(codeInvalid, "until: %v", err)
	}
	c.audit.Flush(context.Background())
	ctx, cancel := c.ctx()
	defer cancel()
	recs, err := c.audit.Query(ctx, t.owner, since, until, maxAuditRecords+1)
	if err != nil {
		return unavailable(c.log, err)
	}
	extra := map[string]any{"since": fmtTime(since), "until": fmtTime(until)}
	if len(recs) > maxAuditRecords {
		recs, extra["truncated"] = recs[:maxAuditRecords], true
	}
	if recs == nil {
		recs = []mongo.AuditRecord{}
	}
	extra["records"] = recs
	return ok(extra)
}

// timeOrAgo parses an RFC 3339 time or a duration before now ("1h", "30m").
func timeOrAgo(s string, now, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := policies.ParseTime(s)
	if err != nil {
		return time.Time{}, errors.New("not an RFC 3339 time or a duration like 1h")
	}
	return t, nil
}

// ---------------------------------------------------------------------------
// Start: the retained tree from MongoDB.

// OnStarted rebuilds the retained $config tree from MongoDB, the source of
// truth: whatever the broker's own state store kept under $config is
// dropped, and every stored policy, thing, relation and pending invitation
// is retained again. No $config message is delivered before this is done.
func (c *Control) OnStarted() {
	if err := c.Reseed(); err != nil {
		c.log.Error().Err(err).Msg("rebuilding the retained configuration from MongoDB")
	}
}

// Reseed rebuilds the retained $config tree from MongoDB.
func (c *Control) Reseed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap, _, err := c.store.Load(ctx)
	if err != nil {
		return err
	}
	invs, err := c.store.Invitations(ctx, "pending")
	if err != nil {
		return err
	}
	// A pending relation without an invitation (written by a bootstrap file)
	// gets one, so that its invitee can answer it over MQTT.
	open := map[string]bool{}
	for _, inv := range invs {
		open[inv.Object+"\x00"+inv.Invitee+"\x00"+inv.Relation] = true
	}
	now := c.clock.Now()
	for _, r := range snap.Relationships {
		if r.Status != policies.StatusPending || open[r.Object()+"\x00"+r.User+"\x00"+string(r.Relation)] {
			continue
		}
		id, err := randomID(10)
		if err != nil {
			return err
		}
		inv := mongo.Invitation{ID: id, Invitee: r.User, Object: r.Object(), Thing: r.Thing, Place: r.Place, Relation: string(r.Relation),
			ValidFrom: fmtTime(r.ValidFrom), ValidUntil: fmtTime(r.ValidUntil), Created: now, Expires: now.Add(c.ttl), Status: "pending"}
		if err := c.store.PutInvitation(ctx, inv); err != nil {
			return err
		}
		invs = append(invs, inv)
	}
	want := map[string]any{}
	for _, op := range snap.Policies {
		want["$config/users/"+op.Owner+"/policies/"+op.Policy.ID] = op.Policy
	}
	for _, t := range snap.Things {
		want["$config/things/"+t.ID] = docOf(t)
	}
	byRel := map[string]*mongo.Invitation{}
	for i := range invs {
		byRel[invs[i].Object+"\x00"+invs[i].Invitee+"\x00"+invs[i].Relation] = &invs[i]
		want[invTopic(invs[i])] = invDoc(invs[i])
	}
	// An active relation shows the invitation it was accepted from, as it
	// did before the restart (the latest accepted one for it).
	accepted, err := c.store.Invitations(ctx, "accepted")
	if err != nil {
		return err
	}
	for i := range accepted {
		key := accepted[i].Object + "\x00" + accepted[i].Invitee + "\x00" + accepted[i].Relation
		if prev := byRel[key]; prev == nil || prev.Status == "accepted" && accepted[i].Created.After(prev.Created) {
			byRel[key] = &accepted[i]
		}
	}
	for _, r := range snap.Relationships {
		topic := relTopic(r)
		if prev, ok := want[topic].(relationDoc); ok && prev.Status == "active" && r.Status != policies.StatusActive {
			continue // one document per user: the active relation wins
		}
		want[topic] = relDoc(r, byRel[r.Object()+"\x00"+r.User+"\x00"+string(r.Relation)])
	}
	for topic := range c.server.Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, "$config/") {
			if _, keep := want[topic]; !keep {
				c.retain(topic, nil)
			}
		}
	}
	for topic, doc := range want {
		c.retain(topic, doc)
	}
	c.ready.Store(true)
	c.log.Info().Int("messages", len(want)).Msg("retained configuration rebuilt from MongoDB")
	return nil
}

// randomID returns n characters of lower-case base32 (a valid topic level).
func randomID(n int) (string, error) {
	const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
	return randomString(n, alphabet)
}

func randomString(n int, alphabet string) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}
