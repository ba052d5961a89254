package hooks

import (
	"cmp"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
	"github.com/veil-iot/veil/policies"
)

// PurposeProperty is the MQTT v5 user property a subscriber declares its
// purpose with, on SUBSCRIBE or CONNECT.
const PurposeProperty = "purpose"

// droppedWillTopic is where a will goes whose publish right was revoked
// after CONNECT: no principal may subscribe under $veil/, so it reaches nobody.
const droppedWillTopic = "$veil/dropped-will"

// Enforcer is the authorisation hook: every publish, subscribe filter and
// delivery is decided by the policy engine, and every delivered payload is
// rewritten for its subscriber.
type Enforcer struct {
	mqtt.HookBase
	engine   *policies.Engine
	sessions *Sessions
	server   *mqtt.Server
	clock    policies.Clock
	live     *LiveValues
	// willArchive is told of the wills that go out as readings.
	willArchive atomic.Pointer[func(topic string, payload []byte, at time.Time)]
	views       *renderings
	log         zerolog.Logger
	metrics     *Metrics

	system []SystemTopics
	audit  AuditFunc

	fanouts *fanouts
	timing  *Timing
	state   StateStore
	parking parking
	rates   rateBook
	wills   delayedWills

	timedSeen atomic.Bool // a delivery was decided under a view that may be looser later
	queued    queuedViews
	latest    sync.Map // client id → the *mqtt.Client that last established its session
	restored  sync.Map // client id → the subscriptions' purposes of a session restored at start
	parses    atomic.Int64
}

// EnforcerConfig wires an Enforcer.
type EnforcerConfig struct {
	Engine   *policies.Engine
	Sessions *Sessions
	Server   *mqtt.Server
	Clock    policies.Clock // nil: wall clock
	Live     *LiveValues    // nil: no live-data context is recorded
	Log      zerolog.Logger
	Metrics  *Metrics // nil: not counted
	// System decides the broker's own $-namespaces ($config, $enroll,
	// $history); everything under $ that none of them handles is refused.
	System []SystemTopics
	// Audit, when set, is told every delivery and publish decision (the
	// audit trail aggregates the non-owner ones). It must not block.
	Audit AuditFunc
	// Timing, when set, samples the time enforcement adds to deliveries.
	Timing *Timing
	// State, when set, keeps across a restart what the enforcer knows of
	// the sessions and in-flight messages the broker's state store keeps.
	State StateStore
}

// AuditFunc receives n alike access decisions: who, what action, under
// which declared purpose, and the engine's decision (thing, stream, rule,
// policy).
// The decision is shared (see policies.Engine.DecideShared): it must not be
// modified.
type AuditFunc func(p policies.Principal, act policies.Action, purpose string, d *policies.Decision, n int64)

// Attach adds an audit sink and system-topic handlers to an enforcer built
// before them (the control plane is assembled after the enforcer). Call it
// before the server serves.
func (h *Enforcer) Attach(audit AuditFunc, system ...SystemTopics) {
	if audit != nil {
		h.audit = audit
	}
	h.system = append(h.system, system...)
}

// Audit tells the audit sink attached to the enforcer, if any, n alike
// decisions made outside it: it is an AuditFunc for the broker's own
// services (History), built before the control plane attaches the sink.
func (h *Enforcer) Audit(p policies.Principal, act policies.Action, purpose string, d *policies.Decision, n int64) {
	if h.audit != nil {
		h.audit(p, act, purpose, d, n)
	}
}

// SystemTopics decides publishes, subscriptions and deliveries in one of
// the broker's own $-namespaces. handled=false leaves the topic to others.
type SystemTopics interface {
	MayPublish(cl *mqtt.Client, p policies.Principal, topic string) (handled, allowed bool)
	MaySubscribe(cl *mqtt.Client, p policies.Principal, filter string) (handled, allowed bool)
	MayDeliver(cl *mqtt.Client, p policies.Principal, topic string) (handled, allowed bool)
}

// SystemPublisher is SystemTopics that also handles the publishes to its
// namespace, as mochi's OnPublish does (returning the packet unchanged
// and no error for a topic outside it). The enforcer's OnPublish hands it
// the publishes to $-topics (not inline ones, nor those it refuses), so
// the broker's own handlers are not hooks of their own: mochi copies the
// 800-byte packet into and out of every OnPublish hook for every message,
// data or not. A hook added after the enforcer that refused a $-publish
// would do so after the handler acted on it; none does.
type SystemPublisher interface {
	SystemTopics
	OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error)
}

// ReplyAddressee is SystemTopics whose replies on $config/replies/{client
// id} are for one client: the one that asked, not whoever holds its id
// when the answer is ready (a history answer takes seconds; its requester
// may be gone and another user connected under the same id).
type ReplyAddressee interface {
	// Addressee returns the client the reply being published on topic is
	// for, or nil when none is.
	Addressee(topic string) *mqtt.Client
}

// renderingSlots sizes the table of renderings. A rendering is needed until
// the last subscriber's write loop has encoded it, and at full rate write
// loops run hundreds of messages behind the publisher; one evicted sooner
// is rendered again, which costs time, never correctness. Every entry holds
// its payload and rendering, live until replaced, so a larger table costs
// each garbage collection more marking and spreads lookups over more
// memory. Fan-out at full rate (2026-11-26, veil bench, 2–3 runs each):
// 16,384 slots 31.3–31.8 thousand instructions per delivery and 1.08
// renders per message; 8,192 31.4–31.8 and 1.16–1.18; 4,096 30.9–31.0 and
// 1.24–1.31; 2,048 30.5–31.0 and 1.61–1.75.
const renderingSlots = 4096

// NewEnforcer returns the hook; add it to the server after the authenticator.
func NewEnforcer(c EnforcerConfig) *Enforcer {
	if c.Clock == nil {
		c.Clock = policies.SystemClock{}
	}
	return &Enforcer{engine: c.Engine, sessions: c.Sessions, server: c.Server, clock: c.Clock, live: c.Live,
		views: newRenderings(renderingSlots), fanouts: newFanouts(), timing: c.Timing, log: c.Log, metrics: c.Metrics, system: c.System, audit: c.Audit,
		state: c.State}
}

// ID names the hook.
func (h *Enforcer) ID() string { return "veil-enforcer" }

// Provides lists the events the enforcer handles. The QoS events only once
// they have work: mochi passes every QoS 1 or 2 delivery and acknowledgement
// (an 800-byte packet, by value) to each hook providing them, about 3 % of
// a QoS 1 delivery, and most configurations never decide a delivery under
// a view that may be looser later. OnQosPublish also while any view is
// kept: a packet id reused must forget the view of its last message.
func (h *Enforcer) Provides(b byte) bool {
	switch b {
	case mqtt.OnQosPublish:
		return h.timedSeen.Load() || h.queued.n.Load() > 0
	case mqtt.OnQosComplete, mqtt.OnQosDropped:
		return h.queued.n.Load() > 0
	}
	return enforcerEvents.Has(b)
}

var enforcerEvents = Events(
	mqtt.OnConnect, mqtt.OnACLCheck, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
	mqtt.OnPublish, mqtt.OnPublished, mqtt.OnPacketEncode, mqtt.OnSessionEstablish,
	mqtt.OnDisconnect, mqtt.OnClientExpired, mqtt.OnWill, mqtt.OnWillSent, mqtt.OnSelectSubscribers,
)

// session returns the client's session; a session restored from storage
// after a restart (authenticated before it) is re-created from its username
// and its CONNECT purpose.
// For a client whose connection is closed the re-created session is not
// kept: mochi still calls hooks for a client after OnDisconnect forgot it
// (OnUnsubscribed as it drops the subscriptions, a delivery decided as the
// connection closed, a restored offline session), and a session kept then
// would keep the client, 64 KB of mochi's queue, for ever.
func (h *Enforcer) session(cl *mqtt.Client) *session {
	if s := h.sessions.get(cl); s != nil {
		return s
	}
	if cl.Net.Inline || len(cl.Properties.Username) == 0 {
		return nil
	}
	name := string(cl.Properties.Username)
	// The CONNECT purpose as the authenticator read it: mochi keeps the
	// CONNECT's user properties with the session, across a restart too.
	purpose := userProperty(cl.Properties.Props.User, PurposeProperty)
	var s *session
	if _, ok := h.engine.Thing(name); ok && cl.ID == name {
		s = newSession(policies.ThingPrincipal(name), false, purpose)
	} else if u, ok := h.engine.User(name); ok {
		s = newSession(policies.UserPrincipal(name), u.Admin, purpose)
	} else {
		return nil
	}
	if cl.Net.Conn == nil && h.state != nil {
		// A session mochi restored from its store at start: its
		// subscriptions' purposes are the store's.
		if subs := h.restoredPurposes(cl.ID); len(subs) > 0 {
			s.subscribed(subs)
		}
	}
	if !cl.Closed() {
		h.sessions.put(cl, s)
	}
	return s
}

// restoredPurposes returns the subscriptions and purposes of a session
// mochi restored at start, as the store told them, as OnSubscribed would
// have recorded them one after another (a filter without its $share prefix,
// the last subscription's purpose). They are kept by client id: such a
// session, offline, is re-created for every delivery to it.
func (h *Enforcer) restoredPurposes(id string) map[string]*string {
	if m, ok := h.restored.Load(id); ok {
		return m.(map[string]*string)
	}
	ps := h.state.Purposes(id)
	subs := make(map[string]*string, len(ps))
	for _, p := range ps {
		filter, _ := stripShare(p.Filter)
		subs[filter] = &p.Purpose
	}
	h.restored.Store(id, subs)
	return subs
}

// OnConnect switches off outbound topic aliases so every delivery carries
// its topic. The will is decided after authentication (AuthConfig.MayPublish)
// and again when it is sent (OnWill).
func (h *Enforcer) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	cl.Properties.Props.TopicAliasMaximum = 0
	return nil
}

// MayPublish reports whether p may publish to topic now (a will, at CONNECT).
func (h *Enforcer) MayPublish(p policies.Principal, topic string) bool {
	return h.mayWrite(p, topic)
}

// OnWill re-checks the will when it is sent: rights may have been revoked
// since CONNECT. A refused will is sent where nobody can receive it (mochi
// offers no way to cancel it here), as is a retained command (refused at
// CONNECT already: commands are never retained). A will with a delay is
// held by Veil (delayedWills) and decided again when it is due: mochi
// would send it without calling any hook.
func (h *Enforcer) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	delay := time.Duration(cl.Properties.Will.WillDelayInterval) * time.Second
	cl.Properties.Will.WillDelayInterval = 0 // mochi sends what this returns, at once
	s := h.session(cl)
	if s == nil || !h.decideWrite(s.principal, nil, will.TopicName, will.Retain, auditNone) {
		h.count("will_refused")
		will.TopicName, will.Retain, will.Payload = droppedWillTopic, false, nil
		return will, nil
	}
	// The session ends when it expires, and the will is due then at the
	// latest (MQTT 5 §3.1.3.2.2).
	if expiry := time.Duration(cl.Properties.Props.SessionExpiryInterval) * time.Second; expiry < delay {
		delay = expiry
	}
	// A new connection to the session, established before this will or
	// after it (mochi stops the old connection first), cancels it if it
	// resumed the session, and makes it due now if it started clean (the
	// session ended). (A will without a delay is due as its connection
	// ends, taken over or not.)
	if delay > 0 && h.server != nil {
		if h.wills.holdUnlessTaken(cl, s.principal, will, delay, h.sendDelayedWill) != willDueNow {
			will.TopicName, will.Retain, will.Payload = droppedWillTopic, false, nil
			return will, nil
		}
	}
	h.willReading(will)
	return will, nil
}

// willReading takes a will that goes out now as a reading of its stream,
// and as the message being fanned out on its topic (until OnWillSent, or
// OnPublished for a delayed one): mochi sends a will (and Server.Publish a
// delayed one) without OnPublish, so under a rate it would be judged by
// another reading, a second one of its period, and a retained one could
// not be placed. (mochi stamps the will's Created just after: in the rare
// case a second passes in between, a retained will is not found in the
// stream's past, and withheld under a rate.)
func (h *Enforcer) willReading(will mqtt.Will) {
	if h.live == nil || !isDataTopic(will.TopicName) {
		return
	}
	m := newMessage(will.TopicName, will.Payload, &h.parses)
	now := h.clock.Now()
	m.live.raw, m.live.at = will.Payload, now.UnixNano()
	h.live.keep(will.TopicName, &m.live, now.Unix(), will.Retain) // Created as mochi stamps it
	h.auditFanout(h.fanouts.begin(m))
	if archive := h.willArchive.Load(); archive != nil {
		(*archive)(will.TopicName, will.Payload, now)
	}
}

// ArchiveWills has archive told of every will that goes out as a reading
// (Archiver.ArchiveWill): history reads the archive as live reads the
// stream's latest reading, a will included.
func (h *Enforcer) ArchiveWills(archive func(topic string, payload []byte, at time.Time)) {
	h.willArchive.Store(&archive)
}

// OnWillSent ends the fan-out of a will willReading began: left in the
// table, it would be taken for the message of later deliveries on its
// topic (a retained one sent on a subscription) until a sweep.
func (h *Enforcer) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	h.auditFanout(h.fanouts.end(pk.TopicName, pk.Payload))
}

// sendDelayedWill publishes a held will that is due, if its client may
// publish it now (never a retained command: OnWill holds none).
func (h *Enforcer) sendDelayedWill(d *delayedWill) {
	if !h.decideWrite(d.who, nil, d.will.TopicName, d.will.Retain, auditAll) {
		h.count("will_refused")
		return
	}
	h.willReading(d.will)
	if err := h.server.Publish(d.will.TopicName, d.will.Payload, d.will.Retain, d.will.Qos); err != nil {
		h.log.Warn().Err(err).Str("topic", d.will.TopicName).Msg("delayed will not sent")
	}
}

// Stop drops the held wills: the broker is closing.
func (h *Enforcer) Stop() error {
	h.wills.stop()
	return nil
}

// mayWrite decides a publish by p to topic (not retained).
func (h *Enforcer) mayWrite(p policies.Principal, topic string) bool {
	return h.decideWrite(p, nil, topic, false, auditNone)
}

// writeAudit says which publish decisions decideWrite tells the audit sink.
type writeAudit uint8

const (
	auditNone writeAudit = iota
	auditAll
	// auditDeferCommands leaves an allowed command to OnPublish, which
	// decides it again knowing its retain flag (mochi's ACL check is not
	// told it): a retained command is refused there, and audited once, as
	// denied.
	auditDeferCommands
)

// RetainedCommandRule is the rule of the denial of a retained command:
// commands are never retained, whoever may send them. mochi would replay a
// retained command at every later subscription of its thing — a visitor's
// unlock at every reconnect of the lock, long after her window closed —
// on no right but the thing's to read its own commands.
const RetainedCommandRule = "retained-command"

// RetainedCommand reports whether a publish (or a will) to topic with the
// retain flag retain would retain a command.
func RetainedCommand(topic string, retain bool) bool {
	if !retain {
		return false
	}
	res, ok := policies.ParseTopic(topic)
	return ok && res.Kind == policies.ResCommand
}

// decideWrite decides a publish by p to topic, retained or not, telling the
// audit sink as asked. A retained command is denied (RetainedCommandRule)
// where the command is allowed. With the publisher's session, its last
// decision is kept there and taken again for the same topic while the
// configuration is unchanged.
func (h *Enforcer) decideWrite(p policies.Principal, s *session, topic string, retain bool, audit writeAudit) bool {
	var (
		changes uint64
		d       *policies.Decision
		act     policies.Action
	)
	if s != nil {
		changes = h.engine.Changes()
		d, act = s.wrote.get(topic, changes)
	}
	if d == nil {
		res, ok := policies.ParseTopic(topic)
		if !ok {
			return false
		}
		act = policies.ActPublish
		if res.Kind == policies.ResCommand {
			act = policies.ActCommand
		}
		d = h.engine.DecideShared(&policies.Request{Principal: p, Topic: topic, Action: act})
		if s != nil {
			s.wrote.put(topic, act, changes, d)
		}
	}
	if retain && act == policies.ActCommand && d.Allowed() {
		// Rare, and refused: a decision of its own, never kept.
		d = &policies.Decision{Effect: policies.Deny, Rule: RetainedCommandRule, Owner: d.Owner, Thing: d.Thing}
	}
	if h.audit != nil && (audit == auditAll || audit == auditDeferCommands && (act != policies.ActCommand || !d.Allowed())) {
		h.audit(p, act, "", d, 1)
	}
	return d.Allowed()
}

// OnACLCheck decides publishes (write), subscribe filters and deliveries.
func (h *Enforcer) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return write // the broker's own publishes; inline subscriptions are never used for data
	}
	s := h.session(cl)
	if s == nil {
		return false
	}
	if write {
		// A PUBLISH by topic alias only: mochi resolves the alias after
		// this check, and OnPublish decides (and audits) the topic. Set
		// for every publish, so a publish mochi dropped between the two
		// leaves nothing behind for the next one.
		s.aliasOnly.Store(topic == "")
		if topic == "" {
			return true
		}
		if strings.HasPrefix(topic, "$") {
			for _, st := range h.system {
				if handled, ok := st.MayPublish(cl, s.principal, topic); handled {
					return ok
				}
			}
			return false
		}
		// Not told the retain flag: OnPublish decides (and audits) a
		// command again once it is.
		ok := h.timing.timePublishDecision(cl, func() bool { return h.decideWrite(s.principal, s, topic, false, auditDeferCommands) })
		if !ok {
			h.count("publish_denied")
		}
		return ok
	}
	if purpose, ok := s.subscribing(topic); ok {
		return h.maySubscribe(cl, s, topic, purpose)
	}
	if m := h.timing.timing(topic); m != nil {
		start := deliveryStart()
		ok := h.mayDeliver(cl, s, topic)
		m.timed.deliveryEnd(start)
		return ok
	}
	return h.mayDeliver(cl, s, topic)
}

// maySubscribe decides one SUBSCRIBE filter.
func (h *Enforcer) maySubscribe(cl *mqtt.Client, s *session, filter, purpose string) bool {
	f, shared := stripShare(filter)
	if f == "" {
		return false
	}
	switch {
	case strings.HasPrefix(f, "$SYS"):
		return h.isAdmin(s) && !shared
	case strings.HasPrefix(f, "$config/replies/"):
		own := "$config/replies/" + cl.ID
		return f == own || strings.HasPrefix(f, own+"/")
	case strings.HasPrefix(f, "$"):
		for _, st := range h.system {
			if handled, ok := st.MaySubscribe(cl, s.principal, f); handled {
				return ok && !shared
			}
		}
		return false
	}
	if purpose == "" {
		purpose = s.purpose
	}
	d := h.engine.MaySubscribe(s.principal, f, purpose)
	if !d.Allowed() {
		h.count("subscribe_denied")
	}
	return d.Allowed()
}

// decideRead finds the decision for a delivery to s on topic, trying each
// purpose the client declared for it.
func (h *Enforcer) decideRead(s *session, topic string) *policies.Decision {
	d, _ := h.decideReadPurpose(s, topic)
	return d
}

// decideReadPurpose is decideRead that also names the purpose decided under.
// The decision is shared: it must not be modified.
func (h *Enforcer) decideReadPurpose(s *session, topic string) (*policies.Decision, string) {
	var buf [4]string
	var d *policies.Decision
	var purpose string
	req := policies.Request{Principal: s.principal, Topic: topic, Action: policies.ActRead}
	for _, purpose = range s.purposes(topic, buf[:0]) {
		req.Purpose = purpose
		if d = h.engine.DecideShared(&req); d.Allowed() {
			return d, purpose
		}
	}
	return d, purpose
}

// isAdmin reports whether s's user is an admin now: a demotion holds from
// the next $SYS message, not from the client's next connection. (A
// promotion needs one: s.admin is what the user was at CONNECT.)
func (h *Enforcer) isAdmin(s *session) bool {
	if !s.admin || s.principal.Kind != policies.KindUser {
		return false
	}
	u, ok := h.engine.User(s.principal.ID)
	return ok && u.Admin
}

// mayDeliver decides one delivery, including the verdicts that depend on
// the payload (withheld by a constraint) and the subscriber's rate.
func (h *Enforcer) mayDeliver(cl *mqtt.Client, s *session, topic string) bool {
	if strings.HasPrefix(topic, "$") {
		switch {
		case strings.HasPrefix(topic, "$SYS"):
			return h.isAdmin(s)
		case strings.HasPrefix(topic, "$config/replies/"):
			rest := topic[len("$config/replies/"):]
			if rest != cl.ID && !strings.HasPrefix(rest, cl.ID+"/") {
				return false
			}
			for _, st := range h.system {
				if a, ok := st.(ReplyAddressee); ok {
					if to := a.Addressee(topic); to != nil && to != cl {
						return false
					}
				}
			}
			return true
		}
		for _, st := range h.system {
			if handled, ok := st.MayDeliver(cl, s.principal, topic); handled {
				return ok
			}
		}
		return false
	}
	m := h.fanouts.current(topic)
	d, purpose, kept := h.decideDelivery(s, topic, m)
	if h.audit != nil {
		if kept != nil {
			h.countDelivery(m, kept)
		} else {
			h.audit(s.principal, policies.ActRead, purpose, d, 1)
		}
	}
	if !d.Allowed() {
		h.count("delivery_denied")
		return false
	}
	if d.View == nil {
		if d.Dynamic && !h.timedSeen.Load() {
			// Raw by live data now: a restart must know it was (their
			// past is not kept), so OnQosPublish tells the store.
			h.timedSeen.Store(true)
		}
		return true
	}
	var created int64 // a retained message's, for its rate
	if m == nil {
		m, created = h.retainedMessage(topic)
	}
	// Without the payload at hand, OnPacketEncode judges the real one.
	if m != nil {
		if _, err := h.views.renderMessage(d.View, m); err != nil {
			h.count("delivery_withheld")
			return false
		}
	}
	if r := d.View.Rate(); r > 0 && !h.rateAllows(s, topic, m, created, r) {
		h.count("delivery_rate_limited")
		return false
	}
	if (d.Dynamic || !d.Expires.IsZero()) && !h.timedSeen.Load() {
		// The view may be looser by the time the message is written (a
		// queued or resent QoS 1 or 2 delivery): OnQosPublish keeps it.
		h.timedSeen.Store(true)
	}
	return true
}

// rateAllows decides a delivery of m (the fan-out's message, or the
// retained one; nil: unknown) on topic under a rate of one reading per
// period: the first reading the stream took in its period, the periods
// aligned to the Unix epoch, as $history releases them (History.walk), so
// that live and history together give no more than one reading per
// period. A retained reading is judged by its own time (retainedAllows).
// Where the stream keeps no readings (a state), the requester's rate book
// holds back what comes within a period of its last delivery.
func (h *Enforcer) rateAllows(s *session, topic string, m *message, created int64, period time.Duration) bool {
	switch {
	case m != nil && m.live.at != 0:
		return firstOfPeriod(m.live.at, m.live.prevAt, period)
	case m != nil && h.live != nil && isDataTopic(topic):
		if ok, known := h.retainedAllows(topic, m.raw, created, period); known {
			return ok
		}
	}
	return h.rates.allow(s.principal, topic, period, h.clock.Now())
}

// retainedAllows judges a retained reading raw on topic, created by mochi
// at created, under a rate by its own time, among the stream's last
// readings (told apart by bytes and creation second: sensors repeat
// values): withheld if it is not the first of its period, or too old to be
// placed. known is false after a restart, before the stream's first
// reading: nothing to judge by.
func (h *Enforcer) retainedAllows(topic string, raw []byte, created int64, period time.Duration) (ok, known bool) {
	p, known := h.live.find(topic, raw, created)
	return p != nil && firstOfPeriod(p.at, p.prevAt, period), known
}

// retainedRateOK is retainedAllows, passing what cannot be judged (after
// a restart: the ACL check held it to the requester's rate book).
func (h *Enforcer) retainedRateOK(topic string, raw []byte, created int64, period time.Duration) bool {
	ok, known := h.retainedAllows(topic, raw, created, period)
	return ok || !known
}

func isDataTopic(topic string) bool {
	res, ok := policies.ParseTopic(topic)
	return ok && res.Kind == policies.ResData
}

// OnClientExpired forgets an expired persistent session, and takes its
// subscriptions out of mochi's index: mochi drops the client only, and a
// later session under the same client id, anyone's, would be delivered
// what they match (decided under its own rights) without having asked.
func (h *Enforcer) OnClientExpired(cl *mqtt.Client) {
	if cur, ok := h.currentClient(cl.ID); cl.IsTakenOver() || ok && cur != cl {
		// Resumed meanwhile: the session lives on in the new connection.
		// (mochi's expiry looks too, under the id's lock, since patch
		// 0024: a connection on its way in waits for the expiry and starts
		// a session of its own.)
		return
	}
	h.endSession(cl) // first: a parked filter put back meanwhile would outlive it
	if h.server != nil {
		h.server.UnsubscribeClient(cl)
	}
	h.restored.Delete(cl.ID) // (OnUnsubscribed re-created the session, and cached its purposes)
}

// OnQosPublish keeps, by packet id, the view a QoS 1 or 2 delivery is
// decided under when that view may be looser later (it depends on live
// data or ends at a time): a queued or resent packet is written under it
// as well as under the view of that moment (OnPacketEncode). It decides
// here, on the goroutine mochi just checked the delivery on and with the
// packet it queues, so that deliveries to one subscriber from several
// publishers at once cannot swap their views.
func (h *Enforcer) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup || cl.Net.Inline || strings.HasPrefix(pk.TopicName, "$") {
		return // a resend keeps what its first send kept
	}
	// A connection taken over meanwhile: mochi may have moved the message
	// to the new one (its Set came before the move), which then holds it
	// under the same id; else it is a late delivery, lost with the old
	// connection, whose id may be another message's of the new one.
	holder := cl
	if cl.IsTakenOver() {
		cur, ok := h.currentClient(cl.ID)
		if !ok || cur == cl {
			return
		}
		holder = cur
	}
	var v *policies.View
	var owner string
	var dynamic bool
	if s := h.session(holder); s != nil {
		if d := h.decideRead(s, pk.TopicName); d.Allowed() && (d.Dynamic || !d.Expires.IsZero()) {
			v, owner, dynamic = d.View, d.PolicyOwner, d.Dynamic
		}
	}
	if holder != cl {
		moved := false
		if v != nil {
			moved = h.queued.keepInflight(holder, pk.PacketID, pk.Payload, v)
		} else if dynamic {
			cur, ok := holder.State.Inflight.Get(pk.PacketID)
			moved = ok && sameBytes(cur.Payload, pk.Payload)
		}
		if !moved {
			return
		}
	} else {
		h.queued.keep(cl.ID, pk.PacketID, v, pk.Payload) // nil: a reused packet id keeps nothing of the last
	}
	if h.state != nil && (v != nil || dynamic) {
		// A view, or none because live data allowed the delivery raw:
		// after a restart neither can be decided again.
		var sv *StoredView
		if v != nil {
			sv = &StoredView{Owner: owner, Constraints: v.Constraints()}
		}
		h.state.KeepView(cl.ID, pk, sv)
	}
}

// currentClient returns the client mochi holds under id.
func (h *Enforcer) currentClient(id string) (*mqtt.Client, bool) {
	if h.server == nil {
		return nil, false
	}
	return h.server.Clients.Get(id)
}

// OnQosComplete forgets the view kept for an acknowledged delivery. mochi
// also calls it for the client's own publishes, whose packet ids are the
// client's (ClientsOwnFlow): those are not looked at.
func (h *Enforcer) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if !ClientsOwnFlow(pk) {
		h.queued.forget(cl, pk.PacketID)
	}
}

// OnQosDropped forgets the view kept for a delivery mochi gave up on; not
// for a session taken over, whose in-flight messages mochi moved to the
// new connection before it dropped them from the old one, nor for the
// client's own flows.
func (h *Enforcer) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if !cl.IsTakenOver() && !ClientsOwnFlow(pk) {
		h.queued.forget(cl, pk.PacketID)
	}
}

// decideDelivery is decideReadPurpose for a delivery of m (nil: not a
// fan-out's), asking the engine once per principal in a fan-out when the
// subscriber declared its purpose on CONNECT only, and again after any
// change of the configuration (a kept decision holds for the changes it
// was asked at: a message whose fan-out never ended is found by later
// retained deliveries).
// The decision kept in m is returned too, if there is one, to count the
// delivery for the audit with.
func (h *Enforcer) decideDelivery(s *session, topic string, m *message) (*policies.Decision, string, *decidedFor) {
	if m == nil || !s.connectPurposeOnly() {
		d, purpose := h.decideReadPurpose(s, topic)
		return d, purpose, nil
	}
	changes := h.engine.Changes()
	if e := m.decision(s.principal, s.purpose, changes); e != nil {
		return e.d, s.purpose, e
	}
	d, purpose := h.decideReadPurpose(s, topic)
	return d, purpose, m.decide(s.principal, purpose, changes, d)
}

// countDelivery counts a delivery decided by e, kept in m, for the audit:
// in e while the fan-out lasts, recorded together when it ends
// (auditFanout). One counted after that is recorded here, with whatever
// else came late: the increment comes before the look at closed, and the
// closing after closed is set, so one of the two records it.
func (h *Enforcer) countDelivery(m *message, e *decidedFor) {
	e.n.Add(1)
	if m.closed.Load() {
		if n := e.n.Swap(0); n > 0 {
			h.audit(e.who, policies.ActRead, e.purpose, e.d, n)
		}
	}
}

// SweepFanouts hands the audit the counts of messages whose fan-out never
// ended (mochi calls no OnPublished for a publish whose acknowledgement
// failed or that a later hook refused) and forgets them. The broker calls
// it every minute, and a message is closed the second time a sweep sees
// it; with all, every message is, as before the audit's last flush.
func (h *Enforcer) SweepFanouts(all bool) {
	h.fanouts.sweep(all, h.auditFanout)
}

// auditFanout records the deliveries counted in m's decisions, once m's
// fan-out has ended or another message took its place.
func (h *Enforcer) auditFanout(m *message) {
	if m == nil || h.audit == nil || m.closed.Swap(true) {
		return
	}
	for i := range m.decided {
		e := m.decided[i].Load()
		if e == nil {
			break
		}
		if n := e.n.Swap(0); n > 0 {
			h.audit(e.who, policies.ActRead, e.purpose, e.d, n)
		}
	}
}

// retainedMessage is the retained message on topic, which a new
// subscription is being sent, and when mochi created it.
func (h *Enforcer) retainedMessage(topic string) (*message, int64) {
	if h.server == nil {
		return nil, 0
	}
	if pk, ok := h.server.Topics.Retained.Get(topic); ok {
		return newMessage(topic, pk.Payload, &h.parses), pk.Created
	}
	return nil, 0
}

// Stats counts payload parses (Apply's included) and view renders since
// start: a fan-out to many subscribers in few views renders about once per
// view (again where a write loop finds its rendering evicted) and parses
// once for the first rewriting view and once for all the others.
func (h *Enforcer) Stats() (parses, renders int64) {
	return h.parses.Load() + h.views.parses.Load(), h.views.renders.Load()
}

// OnSubscribe notes the filters being subscribed and their purposes, so
// that OnACLCheck can tell a filter check from a delivery.
func (h *Enforcer) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	s := h.session(cl)
	if s == nil {
		return pk
	}
	purpose := SubscribePurpose(pk)
	pending := make(map[string]pendingFilter, len(pk.Filters))
	for _, f := range pk.Filters {
		// A filter may come twice in one SUBSCRIBE: each copy is its own
		// string, and each is checked.
		p := pending[f.Filter]
		p.purpose, p.at = purpose, append(p.at, unsafe.StringData(f.Filter))
		pending[f.Filter] = p
	}
	s.beginSubscribe(pending)
	return pk
}

// SubscribePurpose returns the purpose a SUBSCRIBE declares for its
// subscriptions ("": none, the CONNECT one holds).
func SubscribePurpose(pk packets.Packet) string {
	return userProperty(pk.Properties.User, PurposeProperty)
}

// OnSubscribed records the granted filters with their purposes.
func (h *Enforcer) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	s := h.session(cl)
	if s == nil {
		return
	}
	pending := s.pending.Load()
	granted := map[string]*string{}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] <= packets.CodeGrantedQos2.Code {
			filter, shared := stripShare(f.Filter)
			var purpose string
			if pending != nil {
				purpose = (*pending)[f.Filter].purpose
			}
			granted[filter] = &purpose
			if !shared {
				h.parkIfIdle(cl, s, filter)
			}
		}
	}
	s.subscribed(granted)
	s.beginSubscribe(nil)
}

// OnUnsubscribed forgets the filters.
func (h *Enforcer) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	s := h.session(cl)
	if s == nil {
		return
	}
	gone := make(map[string]*string, len(pk.Filters))
	var own []string
	for _, f := range pk.Filters {
		filter, shared := stripShare(f.Filter)
		gone[filter] = nil
		if !shared {
			own = append(own, filter)
		}
	}
	h.forgetParked(cl.ID, own)
	s.subscribed(gone)
}

// OnPublish re-checks the topic after inbound alias resolution (mochi checks
// the ACL before it resolves an alias) and a command with its retain flag
// (mochi's ACL check is not told it; a retained command is refused), hands
// a publish to a $-topic to the attached SystemPublishers, and keeps any
// other message for the per-recipient decisions of its fan-out.
func (h *Enforcer) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	var started time.Time
	decision, timed := h.timing.claim(cl)
	if timed {
		started = time.Now()
	}
	if h.server != nil {
		h.reviewParked()
	}
	if cl.Net.Inline {
		return pk, nil
	}
	res, parsed := policies.ParseTopic(pk.TopicName)
	command := parsed && res.Kind == policies.ResCommand
	if pk.Properties.TopicAliasFlag || command {
		// Audited here: a publish by alias only (its ACL check saw no
		// topic), and a command (its ACL check audited it if denied only).
		s := h.session(cl)
		if s == nil || !h.decideWrite(s.principal, s, pk.TopicName, pk.FixedHeader.Retain, auditIf(s.aliasOnly.Swap(false) || command)) {
			h.count("publish_denied")
			refusePublish(cl, &pk)
			return pk, packets.ErrRejectPacket
		}
	}
	if strings.HasPrefix(pk.TopicName, "$") {
		return h.systemPublish(cl, pk)
	}
	m := newMessage(pk.TopicName, pk.Payload, &h.parses)
	if h.live != nil && parsed && res.Kind == policies.ResData {
		m.live.raw, m.live.at = pk.Payload, h.clock.Now().UnixNano()
		h.live.keep(pk.TopicName, &m.live, pk.Created, pk.FixedHeader.Retain)
	}
	h.auditFanout(h.fanouts.begin(m))
	if timed {
		h.timing.begin(m, decision, started)
	}
	return pk, nil
}

// auditIf is auditAll if audit, else auditNone.
func auditIf(audit bool) writeAudit {
	if audit {
		return auditAll
	}
	return auditNone
}

// refusePublish acknowledges a publish OnPublish refuses with 0x87 (not
// authorized), as mochi does for one its ACL check refuses: a PUBACK at
// QoS 1, a PUBREC at QoS 2, nothing at QoS 0; an MQTT 3.1.1 client, whose
// acknowledgements carry no reason, is disconnected at QoS 1 and 2 (a
// retained command; topic aliases are MQTT 5's). mochi itself would answer
// an error from OnPublish with a PUBACK whatever the QoS, and log it.
func refusePublish(cl *mqtt.Client, pk *packets.Packet) {
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID,
		ReasonCode: packets.ErrNotAuthorized.Code, Properties: packets.Properties{ReasonString: packets.ErrNotAuthorized.Reason}}
	switch pk.FixedHeader.Qos {
	case 0:
		return
	case 2:
		ack.FixedHeader.Type = packets.Pubrec
	}
	if cl.Properties.ProtocolVersion < 5 {
		cl.Stop(packets.ErrNotAuthorized)
		return
	}
	_ = cl.WritePacket(ack)
}

// systemPublish hands a publish to a $-topic to the attached handlers.
func (h *Enforcer) systemPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	for _, st := range h.system {
		if sp, ok := st.(SystemPublisher); ok {
			var err error
			if pk, err = sp.OnPublish(cl, pk); err != nil {
				return pk, err
			}
		}
	}
	return pk, nil
}

// OnPublished ends the fan-out.
func (h *Enforcer) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	h.auditFanout(h.fanouts.end(pk.TopicName, pk.Payload))
	h.timing.end(pk.TopicName, pk.Payload)
}

// errDropped marks a packet OnPacketEncode refused to write.
var errDropped = errors.New("veil: delivery refused at encode")

// OnPacketEncode rewrites each outgoing PUBLISH for its subscriber into a
// fresh slice, and refuses (as an unencodable packet, so nothing is
// written) one whose decision is now deny or whose payload is withheld.
func (h *Enforcer) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline || strings.HasPrefix(pk.TopicName, "$") {
		return pk
	}
	s := h.session(cl)
	if s == nil {
		h.drop(cl, &pk)
		return pk
	}
	// No defer, and the packet (800 bytes) is edited in place: a defer
	// makes the function zero its result on entry, and every call taking
	// or returning a packet copies it.
	started := h.timing.encodeStart(&s.encodes)
	d := h.decideEncode(s, pk.TopicName)
	var queued *policies.View
	if pk.FixedHeader.Qos > 0 {
		queued = h.queued.get(cl.ID, pk.PacketID, pk.Payload)
	}
	if !d.Allowed() {
		h.drop(cl, &pk)
	} else if pk.FixedHeader.Retain && !pk.FixedHeader.Dup && d.View != nil && d.View.Rate() > 0 && h.live != nil &&
		isDataTopic(pk.TopicName) && !h.retainedRateOK(pk.TopicName, pk.Payload, pk.Created, d.View.Rate()) {
		// A retained reading (on a subscription, or retain-as-published)
		// judged by its own bytes and time: the ACL check may have found
		// another reading's fan-out under way. (Not a resend, Dup: mochi
		// gives up the whole resend at a refused packet.)
		h.count("delivery_rate_limited")
		h.drop(cl, &pk)
	} else if queued == nil && d.View == nil {
		// Raw, most deliveries: not even a call.
	} else if out, rewritten, err := h.payloadFor(d, queued, pk.Payload); err != nil {
		h.drop(cl, &pk)
	} else if rewritten {
		// The view says what of the message this subscriber gets: the
		// publisher's user properties, correlation data, content type and
		// response topic are data no constraint rewrites, so they go no
		// further (payload format, expiry and subscription ids are the
		// broker's and the subscriber's).
		pk.Payload = out
		pk.Properties.User, pk.Properties.CorrelationData = nil, nil
		pk.Properties.ContentType, pk.Properties.ResponseTopic = "", ""
	}
	h.timing.encodeEnd(started)
	return pk
}

// payloadFor returns what a delivery allowed by d gets of the payload raw,
// queued (when not nil) under a view that may have been stricter than d's:
// raw itself when no view rewrites it (rewritten false), an error wrapping
// policies.ErrWithheld when the subscriber gets nothing.
func (h *Enforcer) payloadFor(d *policies.Decision, queued *policies.View, raw []byte) (out []byte, rewritten bool, err error) {
	switch {
	case queued != nil && (d.View == nil || queued.Key() != d.View.Key()):
		// Rendered under both, so it reveals no more than either allows.
		out, err = h.views.render(queued, raw)
		if err == nil && d.View != nil && d.View.Rewrites() {
			out, err = d.View.Apply(out)
		}
		return out, true, err
	case d.View == nil:
		return raw, false, nil
	case !d.View.Rewrites():
		// Written as published, if it is a reading (a JSON object), as
		// under any constraint; the fan-out's own check is in the table.
		if _, err = h.views.render(d.View, raw); err != nil {
			return nil, false, err
		}
		return raw, false, nil
	default:
		out, err = h.views.render(d.View, raw)
		return out, true, err
	}
}

// decideReadAt is decideRead as of at (uncached: a resend after a restart).
func (h *Enforcer) decideReadAt(s *session, topic string, at time.Time) policies.Decision {
	var buf [4]string
	var d policies.Decision
	req := policies.Request{Principal: s.principal, Topic: topic, Action: policies.ActRead}
	for _, req.Purpose = range s.purposes(topic, buf[:0]) {
		if d = h.engine.DecideAt(req, at); d.Allowed() {
			break
		}
	}
	return d
}

// decideEncode is decideRead for the write loop, which asks the engine
// again only when the topic or the configuration changed since its last
// delivery (for a subscriber that declared its purpose on CONNECT only).
func (h *Enforcer) decideEncode(s *session, topic string) *policies.Decision {
	if !s.connectPurposeOnly() {
		return h.decideRead(s, topic)
	}
	changes := h.engine.Changes()
	if d, _ := s.encoded.get(topic, changes); d != nil {
		return d
	}
	// Asked under the CONNECT purpose by name, not through s.purposes: a
	// subscription declaring another purpose may arrive meanwhile, and a
	// decision asked under it must not be kept for the deliveries after its
	// unsubscribe.
	d := h.engine.DecideShared(&policies.Request{Principal: s.principal, Topic: topic, Action: policies.ActRead, Purpose: s.purpose})
	s.encoded.put(topic, policies.ActRead, changes, d)
	return d
}

// drop turns pk into a packet mochi cannot encode, so WritePacket writes
// nothing, and forgets it as inflight so it is never resent.
func (h *Enforcer) drop(cl *mqtt.Client, pk *packets.Packet) {
	h.count("encode_dropped")
	h.log.Debug().Str("client", cl.ID).Str("topic", pk.TopicName).Msg("delivery refused at encode")
	if pk.FixedHeader.Qos > 0 {
		h.forgetInflight(cl, pk.PacketID, pk.Payload)
	}
	pk.FixedHeader.Type = packets.Reserved
	pk.Payload = nil
}

// forgetInflight takes packet pid out of cl's in-flight messages, and its
// view and stored copy with it, if the id still holds the message whose
// payload is payload (mochi's in-flight copies share it): an id freed
// meanwhile (the message's expiry, an acknowledgement) may hold another
// message by now. The view and the stored copy go first: once the id is
// deleted, mochi may reuse it.
func (h *Enforcer) forgetInflight(cl *mqtt.Client, pid uint16, payload []byte) {
	if cl.IsTakenOver() {
		return // mochi moves its in-flight messages to the new connection, which holds them
	}
	if cur, ok := cl.State.Inflight.Get(pid); !ok || !sameBytes(cur.Payload, payload) {
		return
	}
	h.queued.keep(cl.ID, pid, nil, nil)
	if h.state != nil {
		h.state.Dropped(cl.ID, pid)
	}
	cl.State.Inflight.Delete(pid)
}

// OnSessionEstablish prunes what a taken-over session would resend: inflight
// messages the (possibly changed) rights no longer allow, or whose payload
// the view now withholds.
func (h *Enforcer) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if h.server == nil {
		return
	}
	// A new connection to the session cancels a will held for its delay; a
	// clean start ends the session, and the will is due now. (The old
	// connection's will may come after: this takeover decides it, see
	// OnWill.)
	h.latest.Store(cl.ID, cl)
	d := h.wills.establish(cl, pk.Connect.Clean)
	defer h.restored.Delete(cl.ID) // the session's record has them from now on
	if d != nil && pk.Connect.Clean {
		h.sendDelayedWill(d)
	}
	if pk.Connect.Clean {
		h.queued.forgetClient(cl.ID) // mochi starts it with nothing in flight
	}
	existing, ok := h.server.Clients.Get(cl.ID)
	if !ok || existing == cl {
		return
	}
	// mochi puts the taken-over session's subscriptions back in its index
	// (or drops them for a clean start): none is parked any more.
	h.forgetParked(cl.ID, nil)
	s := h.session(cl)
	old := h.session(existing) // (a session restored at start: re-created, with its stored purposes)
	if !pk.Connect.Clean {     // (a clean start: mochi discards them)
		// The subscriptions' purposes first: the session's messages are
		// decided under them.
		if old != nil && s != nil {
			old.mu.Lock()
			kept := make(map[string]*string, len(old.subs))
			for f, p := range old.subs {
				kept[f] = &p
			}
			old.mu.Unlock()
			s.subscribed(kept)
		}
		h.pruneInflight(cl, existing, s)
		keepResendOrder(existing)
	}
	// mochi drops the old client once the new one has its state; a
	// persistent session's old client gets no OnDisconnect after this.
	h.sessions.drop(existing)
}

// pruneInflight takes out of the in-flight messages of existing, which cl
// takes over, those cl may no longer have (s is cl's session, nil: none),
// and those whose payload the view now withholds: mochi gives up the whole
// resend, and the connection, at the first packet the encode hook refuses.
// (The renderings stay in the table for that hook.)
func (h *Enforcer) pruneInflight(cl, existing *mqtt.Client, s *session) {
	// A client mochi restored from its store at start (it has no
	// connection) brought in-flight messages whose views were never kept
	// (they are in memory): each is decided again as of when its delivery
	// was, and written under that view too.
	restored := existing.Net.Conn == nil && !existing.Net.Inline
	for _, m := range existing.State.Inflight.GetAll(false) {
		if m.FixedHeader.Type != packets.Publish {
			continue
		}
		var d *policies.Decision
		if s != nil {
			d = h.decideRead(s, m.TopicName)
		}
		if d != nil && d.Allowed() && restored && h.queued.get(cl.ID, m.PacketID, m.Payload) == nil {
			if v, ok := h.restoredView(cl.ID, s, m); !ok {
				d = nil
			} else if v != nil && !h.queued.keepInflight(existing, m.PacketID, m.Payload, v) {
				continue // gone meanwhile (its in-flight expiry)
			}
		}
		if d != nil && d.Allowed() {
			if _, _, err := h.payloadFor(d, h.queued.get(cl.ID, m.PacketID, m.Payload), m.Payload); err != nil {
				d = nil
			}
		}
		if d == nil || !d.Allowed() {
			h.forgetInflight(existing, m.PacketID, m.Payload)
			h.count("inflight_pruned")
		}
	}
}

// restoredView returns the view the delivery of m, restored after a restart
// for client id, was decided under (nil: none), or false if it must not be
// written. The store kept the view if it could be looser later; else the
// delivery is decided again as of when it was (for a retained message, its
// subscription), or as of m's creation if the store does not know. A kept
// view that no longer compiles withholds the message.
func (h *Enforcer) restoredView(id string, s *session, m packets.Packet) (*policies.View, bool) {
	var r RestoredDelivery
	if h.state != nil {
		var read bool
		if r, read = h.state.Restored(id, m.PacketID); !read {
			// Delivered since the start, to the session offline: decided
			// in this process, its view, if it may loosen, is kept.
			return nil, true
		}
	}
	switch {
	case r.View != nil:
		v, err := h.engine.ViewFor(r.View.Owner, r.View.Constraints)
		if err != nil {
			h.log.Warn().Str("client", id).Str("topic", m.TopicName).Err(err).Msg("stored view of an in-flight message does not compile; not resent")
			return nil, false
		}
		return v, true
	case r.Raw:
		return nil, true
	}
	at := r.DecidedAt
	if at.IsZero() {
		at = time.Unix(m.Created, 0)
	}
	then := h.decideReadAt(s, m.TopicName, at)
	if then.Dynamic {
		// Decided by live data, whose past is not kept, and the store does
		// not know how (a record older than this version): not resent.
		return nil, false
	}
	return then.View, then.Allowed()
}

// keepResendOrder makes mochi resend cl's in-flight messages in the order
// they were sent ([MQTT-4.6.0-1]). mochi sorts them by the second they were
// created in, with an unstable sort: messages queued within one second for
// an offline session came back in any order. Their packet ids were taken
// in sending order, so each message that shares its second with an earlier
// one is stamped a second later than it, which only delays its in-flight
// expiry by as many seconds (the state store keeps the first time). A
// message no longer in flight (its expiry) is not set back.
func keepResendOrder(cl *mqtt.Client) {
	msgs := slices.DeleteFunc(cl.State.Inflight.GetAll(false), ClientsOwnFlow)
	if len(msgs) < 2 {
		return
	}
	slices.SortStableFunc(msgs, func(a, b packets.Packet) int {
		return cmp.Or(cmp.Compare(a.Created, b.Created), cmp.Compare(a.PacketID, b.PacketID))
	})
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Created <= msgs[i-1].Created {
			msgs[i].Created = msgs[i-1].Created + 1
			// In place: the old connection may still be sending (and
			// marking sent) what a copy read above would take back.
			cl.State.Inflight.SetCreated(msgs[i].PacketID, msgs[i].Payload, msgs[i].Created)
		}
	}
}

// OnDisconnect forgets a session that ends with its connection, and the
// record of a connection whose session another one took over.
func (h *Enforcer) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.wills.ended(cl)
	switch {
	case cl.IsTakenOver():
		// The session lives on in the connection that took it over, which
		// owns the client id and with it the parked subscriptions.
		h.sessions.drop(cl)
	case expire:
		h.endSession(cl)
	}
}

// endSession forgets cl's session and its parked subscriptions.
func (h *Enforcer) endSession(cl *mqtt.Client) {
	h.sessions.drop(cl)
	if cur, ok := h.latest.Load(cl.ID); ok && cur != cl {
		return // a newer connection holds the session: its parked filters, its in-flight messages
	}
	h.forgetParked(cl.ID, nil)
	h.latest.CompareAndDelete(cl.ID, cl)
	h.queued.forgetClient(cl.ID)
	h.restored.Delete(cl.ID)
}

func (h *Enforcer) count(what string) {
	if h.metrics != nil {
		h.metrics.count(what)
	}
}

// Metrics counts enforcement outcomes (exported by the broker to Prometheus).
type Metrics struct {
	counts sync.Map // outcome → *atomic.Int64; a lookup takes no lock (denials count per delivery)
}

// NewMetrics returns empty counters.
func NewMetrics() *Metrics { return &Metrics{} }

func (m *Metrics) count(what string) {
	c, ok := m.counts.Load(what)
	if !ok {
		c, _ = m.counts.LoadOrStore(what, &atomic.Int64{})
	}
	c.(*atomic.Int64).Add(1)
}

// Snapshot returns the current counts.
func (m *Metrics) Snapshot() map[string]int64 {
	out := map[string]int64{}
	m.counts.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}
