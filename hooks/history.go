package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/policies"
)

// HistoryPrefix starts every archive query topic:
// $history/things/{thing}/data/{stream}.
const HistoryPrefix = "$history/"

// History limits. A request asks for at most MaxHistoryLimit readings
// (DefaultHistoryLimit when it names no limit); the answer comes in pages
// of at most HistoryPageSize readings and HistoryPageBytes bytes.
const (
	DefaultHistoryLimit = 1000
	MaxHistoryLimit     = 10000
	HistoryPageSize     = 500
	HistoryPageBytes    = 48 << 10
	// DefaultHistoryWindow is how far back "from" reaches when omitted.
	DefaultHistoryWindow = 24 * time.Hour
	// historyTimeout bounds one query.
	historyTimeout = 30 * time.Second
	// maxConcurrentHistory bounds the queries running at once.
	maxConcurrentHistory = 8
	// maxHistoryPerRequester bounds the queries one principal runs at
	// once, so that one requester's slow queries cannot take every slot
	// and leave everyone else busy.
	maxHistoryPerRequester = 2
)

// The archive's time range, whole seconds within it: InfluxDB keeps a
// time as int64 nanoseconds since the epoch (1677-09-21T00:12:43.145224194Z
// to 2262-04-11T23:47:16.854775806Z) and a Flux range past them wraps
// around and fails with an error of InfluxDB's. A request's from and to
// must lie within it; ranges the walk makes itself (the rate's search, the
// live values' lookback) are cut to it, as nothing is archived outside it.
var (
	historyEarliest = time.Date(1677, 9, 21, 0, 12, 44, 0, time.UTC)
	historyLatest   = time.Date(2262, 4, 11, 23, 47, 16, 0, time.UTC)
)

// inArchiveRange cuts t to [historyEarliest, historyLatest].
func inArchiveRange(t time.Time) time.Time {
	if t.Before(historyEarliest) {
		return historyEarliest
	}
	if t.After(historyLatest) {
		return historyLatest
	}
	return t
}

// HistorySource streams the archived readings of one stream in [from, to),
// oldest first, each as its JSON object; fn returns false to stop.
type HistorySource interface {
	History(ctx context.Context, thing, stream string, from, to time.Time, fn func(t time.Time, reading []byte) bool) error
}

// HistoryTopics is the enforcer's rule for the $history namespace: any
// authenticated client may send a request (it is answered, with an error
// if it is not allowed), nobody may subscribe to or receive one.
type HistoryTopics struct{}

// MayPublish allows requests.
func (HistoryTopics) MayPublish(_ *mqtt.Client, _ policies.Principal, topic string) (bool, bool) {
	if !strings.HasPrefix(topic, HistoryPrefix) {
		return false, false
	}
	return true, true
}

// MaySubscribe refuses every filter in $history.
func (HistoryTopics) MaySubscribe(_ *mqtt.Client, _ policies.Principal, filter string) (bool, bool) {
	if filter == "$history" || strings.HasPrefix(filter, "$history/") {
		return true, false
	}
	return false, false
}

// MayDeliver refuses every delivery in $history.
func (HistoryTopics) MayDeliver(_ *mqtt.Client, _ policies.Principal, topic string) (bool, bool) {
	if strings.HasPrefix(topic, HistoryPrefix) {
		return true, false
	}
	return false, false
}

// History answers archive queries (MQTT v5 request/response): a request
// on $history/things/{thing}/data/{stream} with {"from","to","limit"} is
// answered on its response topic — which must be $config/replies/{its
// client id} or below; without one the answer goes there — with its
// correlation data. Every reading passes exactly the decision and view a
// live delivery to the requester at the reading's archived time would:
// Decide(history, purpose) as of that time (a co-owner for one evening
// has that evening's readings, not the year before it), the view's
// rewrite and withholding (range, non-JSON); and only while the requester
// may ask now. A rate of one reading per period releases the first
// reading of each period of reading time,
// the periods aligned to the Unix epoch, whatever the query (see walk).
//
// Every request decided is told to the audit trail (action history): a
// refusal as the decision that refused it, once; an answer, when it
// ends, as the readings it released, counted per decision that released
// them (see answer).
//
// Answer pages: {"topic", "ok": true, "page": n, "more": bool,
// "readings": [{"ts": RFC 3339, "data": {…}}], "next": RFC 3339}. "next"
// (on the last page only) is set when the limit cut the answer short: ask
// again with it as "from". Errors: {"topic", "ok": false, "error"}.
type History struct {
	HistoryTopics // who may publish, subscribe and receive in $history

	engine   *policies.Engine
	sessions *Sessions
	server   *mqtt.Server
	source   HistorySource
	clock    policies.Clock
	log      zerolog.Logger
	metrics  *Metrics
	audit    AuditFunc

	once      sync.Once
	inline    *mqtt.Client
	replying  sync.Mutex                     // one reply is published at a time…
	addressee atomic.Pointer[addressedReply] // …for its requester only
	slotsMu   sync.Mutex                     // guards running and runningBy
	running   int                            // queries running
	runningBy map[policies.Principal]int     // queries running per requester
	wg        sync.WaitGroup
	ctx       context.Context
	stop      context.CancelFunc
}

// HistoryConfig wires a History hook.
type HistoryConfig struct {
	Engine   *policies.Engine
	Sessions *Sessions
	Server   *mqtt.Server
	Source   HistorySource  // nil: the archive is off; requests get an error
	Clock    policies.Clock // "to" defaults to its now; nil: wall clock
	Log      zerolog.Logger
	Metrics  *Metrics
	// Audit, when set, is told each request's decisions under the action
	// history, as the enforcer tells its own (it filters what the owners
	// see). It must not block.
	Audit AuditFunc
}

// NewHistory returns the hook.
func NewHistory(c HistoryConfig) *History {
	if c.Clock == nil {
		c.Clock = policies.SystemClock{}
	}
	h := &History{engine: c.Engine, sessions: c.Sessions, server: c.Server, source: c.Source, clock: c.Clock,
		log: c.Log, metrics: c.Metrics, audit: c.Audit, runningBy: map[policies.Principal]int{}}
	h.ctx, h.stop = context.WithCancel(context.Background())
	return h
}

// History is not a hook of mochi's: its requests come through the
// enforcer, as a SystemPublisher, and the broker Closes it.
var _ SystemPublisher = (*History)(nil)

// Close cancels running queries and waits for them.
func (h *History) Close() {
	h.stop()
	h.wg.Wait()
}

// historyRequest is the request body.
type historyRequest struct {
	From  *string  `json:"from"`
	To    *string  `json:"to"`
	Limit *float64 `json:"limit"`
}

type historyItem struct {
	TS   string          `json:"ts"`
	Data json.RawMessage `json:"data"`
}

type historyPage struct {
	Topic    string        `json:"topic"`
	OK       bool          `json:"ok"`
	Error    string        `json:"error,omitempty"`
	Page     int           `json:"page,omitempty"`
	More     bool          `json:"more"`
	Readings []historyItem `json:"readings,omitempty"`
	Next     string        `json:"next,omitempty"`
}

// query is one validated request.
type query struct {
	cl          *mqtt.Client
	principal   policies.Principal
	purpose     string
	topic       string // $history/…
	resource    string // things/{thing}/data/{stream}
	res         policies.Resource
	from, to    time.Time
	limit       int
	replyTo     string
	correlation []byte
	maxPacket   int
}

// OnPublish takes every request off the normal path (acknowledged, never
// retained or fanned out) and answers it.
func (h *History) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !strings.HasPrefix(pk.TopicName, HistoryPrefix) {
		return pk, nil
	}
	q, err := h.parse(cl, pk)
	if err != nil {
		h.count("history_refused")
		h.reply(q, historyPage{Topic: pk.TopicName, Error: err.Error()})
		return pk, packets.CodeSuccessIgnore
	}
	if busy := h.takeSlot(q.principal); busy != "" {
		h.reply(q, historyPage{Topic: q.topic, Error: busy})
		return pk, packets.CodeSuccessIgnore
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer h.freeSlot(q.principal)
		h.answer(q)
	}()
	return pk, packets.CodeSuccessIgnore
}

// takeSlot takes one of the slots queries run in for p, or says why not:
// p runs as many as one requester may, or all run.
func (h *History) takeSlot(p policies.Principal) (busy string) {
	h.slotsMu.Lock()
	defer h.slotsMu.Unlock()
	if n := h.runningBy[p]; n >= maxHistoryPerRequester {
		h.count("history_busy_requester")
		return fmt.Sprintf("busy: %d of your history queries are in progress, as many as one requester may run at once; ask again when one is answered", n)
	}
	if h.running >= maxConcurrentHistory {
		h.count("history_busy")
		return "busy: too many history queries in progress; try again shortly"
	}
	h.running++
	h.runningBy[p]++
	return ""
}

// freeSlot gives back a slot takeSlot took for p.
func (h *History) freeSlot(p policies.Principal) {
	h.slotsMu.Lock()
	defer h.slotsMu.Unlock()
	h.running--
	if h.runningBy[p]--; h.runningBy[p] == 0 {
		delete(h.runningBy, p) // a map of the requesters running, not of all who ever asked
	}
}

// parse validates a request. On error q still says where to reply.
func (h *History) parse(cl *mqtt.Client, pk packets.Packet) (q query, err error) {
	own := "$config/replies/" + cl.ID
	q = query{cl: cl, topic: pk.TopicName, replyTo: own, correlation: bytes.Clone(pk.Properties.CorrelationData),
		maxPacket: int(cl.Properties.Props.MaximumPacketSize)}
	if rt := pk.Properties.ResponseTopic; rt != "" {
		if rt != own && !strings.HasPrefix(rt, own+"/") || strings.ContainsAny(rt, "+#") {
			return q, fmt.Errorf("response topic %q: must be %s or a topic below it", rt, own)
		}
		q.replyTo = rt
	}
	s := h.sessions.get(cl)
	if s == nil {
		return q, errors.New("not authenticated")
	}
	q.principal = s.principal
	q.purpose = userProperty(pk.Properties.User, PurposeProperty)
	if q.purpose == "" {
		q.purpose = s.purpose
	}
	q.resource = strings.TrimPrefix(pk.TopicName, HistoryPrefix)
	res, ok := policies.ParseTopic(q.resource)
	if !ok || res.Kind != policies.ResData {
		return q, fmt.Errorf("topic %q: want $history/things/{thing}/data/{stream}", pk.TopicName)
	}
	q.res = res
	if err := q.parseBody(pk.Payload, h.clock.Now()); err != nil {
		return q, err
	}
	// The same decision a live delivery gets, for the action history. An
	// unknown thing and a refused one answer alike: nobody learns which
	// things exist.
	if d := h.engine.Decide(h.request(q)); !d.Allowed() {
		h.record(&q, &d, 1)
		return q, fmt.Errorf("not allowed: the history of %s is not shared with you", q.resource)
	}
	if h.source == nil {
		return q, errors.New("the sensor archive is off on this broker")
	}
	return q, nil
}

// parseBody reads {"from", "to", "limit"}; an empty body takes the defaults.
func (q *query) parseBody(body []byte, now time.Time) error {
	var r historyRequest
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return fmt.Errorf("request: want a JSON object {\"from\", \"to\", \"limit\"}: %s", jsonProblem(err))
		}
		if dec.More() {
			return errors.New("request: trailing data after the JSON object")
		}
	}
	q.to, q.limit = now, DefaultHistoryLimit
	if r.To != nil {
		t, err := parseHistoryTime("to", *r.To)
		if err != nil {
			return err
		}
		q.to = t
	}
	// A default, not the client's: cut to the archive's range, not refused.
	q.from = inArchiveRange(q.to.Add(-DefaultHistoryWindow))
	if r.From != nil {
		t, err := parseHistoryTime("from", *r.From)
		if err != nil {
			return err
		}
		q.from = t
	}
	if !q.to.After(q.from) {
		return errors.New("to: must be after from")
	}
	if r.Limit != nil {
		n := *r.Limit
		if n != math.Trunc(n) || n < 1 || n > MaxHistoryLimit {
			return fmt.Errorf("limit: must be a whole number from 1 to %d", MaxHistoryLimit)
		}
		q.limit = int(n)
	}
	return nil
}

// parseHistoryTime reads a request's field, an RFC 3339 time within the
// archive's range: one outside it would reach InfluxDB, whose error (its
// own text) would be the answer.
func parseHistoryTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %q is not an RFC 3339 time (e.g. 2026-11-25T18:00:00Z)", field, s)
	}
	if t.Before(historyEarliest) || t.After(historyLatest) {
		return time.Time{}, fmt.Errorf("%s: %q is outside the archive's time range, %s to %s", field, s,
			historyEarliest.Format(time.RFC3339), historyLatest.Format(time.RFC3339))
	}
	return t, nil
}

func jsonProblem(err error) string {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("%s: want a %s", ute.Field, map[string]string{"from": "string", "to": "string", "limit": "number"}[ute.Field])
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown key " + f + " (want from, to, limit)"
	}
	return msg
}

func (h *History) request(q query) policies.Request {
	return policies.Request{Principal: q.principal, Topic: q.resource, Action: policies.ActHistory, Purpose: q.purpose}
}

// record tells the audit trail n of q's requester's history decisions d,
// under the purpose they were decided for.
func (h *History) record(q *query, d *policies.Decision, n int64) {
	if h.audit == nil || n <= 0 {
		return
	}
	if d.Rule == "owner" || d.Rule == "co_owner" {
		// Released by a say the requester had at the readings' time (a
		// co-owner for one evening): the trail leaves out an owner's own
		// access, but not one who has no say now.
		req := h.request(*q)
		if now := h.engine.DecideShared(&req); now.Rule != "owner" && now.Rule != "co_owner" {
			then := *d
			then.Rule = "was_" + d.Rule
			d = &then
		}
	}
	h.audit(q.principal, policies.ActHistory, q.purpose, d, n)
}

// releasedBy counts the readings an answer sent that one decision released.
type releasedBy struct {
	d policies.Decision
	n int64
}

// sameForAudit reports whether a and b make the same audit record.
func sameForAudit(a, b *policies.Decision) bool {
	return a.Effect == b.Effect && a.Rule == b.Rule && a.PolicyID == b.PolicyID && a.PolicyOwner == b.PolicyOwner &&
		a.Owner == b.Owner && a.Thing == b.Thing && a.Stream == b.Stream && (a.View == nil) == (b.View == nil)
}

// answer runs the query and sends the pages.
func (h *History) answer(q query) {
	ctx, cancel := context.WithTimeout(h.ctx, historyTimeout)
	defer cancel()
	pageBytes := HistoryPageBytes
	if q.maxPacket > 0 {
		pageBytes = min(pageBytes, q.maxPacket-1024)
	}
	page := historyPage{Topic: q.topic, OK: true, Page: 1}
	size := 0
	// The audit trail counts the readings sent, by the decision that
	// released each (a walk's decisions change with the readings' times):
	// readings of a page never sent (the requester gone, the walk failed)
	// were not released. Told when the answer ends, however it ends.
	var released []releasedBy
	var onPage []int64 // the page's readings, per entry of released
	defer func() {
		for i := range released {
			h.record(&q, &released[i].d, released[i].n)
		}
	}()
	flush := func(more bool) {
		if !h.requesterHere(q) {
			cancel() // the walk ends, and the answer with it
			return
		}
		page.More = more
		h.reply(q, page)
		for i, n := range onPage {
			released[i].n += n
			onPage[i] = 0
		}
		page = historyPage{Topic: q.topic, OK: true, Page: page.Page + 1}
		size = 0
	}
	next, err := h.walk(ctx, q, func(t time.Time, out []byte, d *policies.Decision) {
		item := historyItem{TS: t.UTC().Format(time.RFC3339Nano), Data: out}
		n := len(item.TS) + len(out) + 20
		if len(page.Readings) > 0 && (len(page.Readings) >= HistoryPageSize || size+n > pageBytes) {
			flush(true)
		}
		page.Readings = append(page.Readings, item)
		size += n
		i := len(released) - 1 // mostly the decision of the reading before
		for i >= 0 && !sameForAudit(&released[i].d, d) {
			i--
		}
		if i < 0 {
			i = len(released)
			released, onPage = append(released, releasedBy{d: *d}), append(onPage, 0)
		}
		onPage[i]++
	})
	if !h.requesterHere(q) {
		h.count("history_abandoned")
		return
	}
	if err != nil {
		h.count("history_failed")
		h.log.Warn().Err(err).Str("topic", q.topic).Str("client", q.cl.ID).Msg("history query failed")
		// The archive's own error text stays in the log: it may name the
		// store, its bucket or its query, none of the requester's business.
		msg := "archive unavailable"
		if errors.Is(err, errHistoryNotShared) || errors.Is(err, errTooManyValueStreams) {
			msg = err.Error() // ours, and about the request
		}
		h.reply(q, historyPage{Topic: q.topic, Error: msg, Page: page.Page})
		return
	}
	if !next.IsZero() {
		page.Next = next.UTC().Format(time.RFC3339Nano)
	}
	h.count("history_answered")
	flush(false)
}

// errHistoryNotShared is walk's error when the requester may not (or no
// longer) have the history.
var errHistoryNotShared = errors.New("not allowed")

// walk streams to emit, oldest first, at most q.limit of the readings of
// [q.from, q.to) the requester may have, each as its view renders it,
// with the decision that released it (valid during the call); next
// is the time of the first reading past the limit (zero if none).
//
// A rate of one reading per period releases the first reading of each
// period-long bucket of reading time, the buckets aligned to the Unix epoch
// (floor(t / period)): which readings a rate releases depends on the
// archive alone, never on the query, so asking again from just after a
// released reading does not release the next one of its period. As live,
// the bucket's first reading takes it whether the requester may have it
// or not (not shared at its time, or withheld by the view): none after it
// in the bucket is released. The bucket of the walk's first reading may
// have begun before q.from: the archive is asked whether it holds a
// reading between the two (historyRate.release).
func (h *History) walk(ctx context.Context, q query, emit func(t time.Time, out []byte, d *policies.Decision)) (next time.Time, err error) {
	var failed error
	emitted := 0
	rate := historyRate{from: q.from}
	earlier := func(start time.Time) (found bool, err error) {
		err = h.source.History(ctx, q.res.Thing, q.res.Name, inArchiveRange(start), q.from, func(t time.Time, _ []byte) bool {
			found = t.Before(q.from) // a source may stream its end too
			return false
		})
		return found, err
	}
	req := h.request(q)
	asOf := readingDecisions{engine: h.engine, req: req, values: pastValues{ctx: ctx, source: h.source}}
	visit := func(t time.Time, reading []byte) bool {
		if err := ctx.Err(); err != nil {
			failed = err
			return false
		}
		// The requester may still ask (cached in the engine: a revocation
		// takes effect in the middle of an answer)…
		if now := h.engine.DecideShared(&req); !now.Allowed() {
			h.record(&q, now, 1) // refused in the middle of its answer
			failed = fmt.Errorf("%w: the history of %s is not shared with you", errHistoryNotShared, q.resource)
			return false
		}
		// …and the reading is released as a live delivery of it was
		// decided: at its own time, with the live values of then, under
		// the policies in force now.
		d, err := asOf.decide(t)
		if err != nil {
			failed = err
			return false
		}
		shared, out := d.Allowed(), reading
		var period time.Duration
		if shared && d.View != nil {
			// Withheld (range, non-JSON) as a live delivery would be.
			out, err = d.View.Apply(reading)
			shared, period = err == nil, d.View.Rate()
		}
		// Every reading takes its bucket, shared or not: live, a rate
		// releases the stream's first reading of a period, and none after
		// it whether that one went to the requester or not.
		released, err := rate.release(t, period, earlier)
		if err != nil {
			failed = err
			return false
		}
		if !shared || !released {
			return true
		}
		if emitted == q.limit {
			next = t
			return false
		}
		emit(t, out, d)
		emitted++
		return true
	}
	err = h.source.History(ctx, q.res.Thing, q.res.Name, q.from, q.to, visit)
	if err == nil {
		err = failed
	}
	if err != nil {
		return time.Time{}, err
	}
	return next, nil
}

// historyRate is one walk's rate: it sees, oldest first, every reading
// of the stream from the query's from on.
type historyRate struct {
	from time.Time // the query's
	last time.Time // the latest reading seen
	seen bool      // last is set
}

// release notes reading t and reports whether a rate of one reading per
// period (0: none) releases it: whether it is the first reading of its
// bucket. Of the walk's first reading the bucket may have begun before
// from: earlier tells whether the stream took a reading between the
// bucket's start and from.
func (r *historyRate) release(t time.Time, period time.Duration, earlier func(start time.Time) (bool, error)) (bool, error) {
	prev, seen := r.last, r.seen
	if !seen || t.After(prev) {
		r.last, r.seen = t, true
	}
	if period <= 0 {
		return true, nil
	}
	start := periodStart(t, period)
	if seen {
		return prev.Before(start), nil
	}
	if !start.Before(r.from) {
		return true, nil
	}
	found, err := earlier(start)
	return !found, err
}

// addressedReply is a reply being published: on topic, for to only.
type addressedReply struct {
	topic string
	to    *mqtt.Client
}

// Addressee returns the client a reply being published on topic is for,
// or nil: the enforcer delivers it to that client only (ReplyAddressee).
func (h *History) Addressee(topic string) *mqtt.Client {
	if a := h.addressee.Load(); a != nil && a.topic == topic {
		return a.to
	}
	return nil
}

// requesterHere reports whether q's requester still holds its client id:
// an answer to a requester gone is not worth the archive's work.
func (h *History) requesterHere(q query) bool {
	if h.server == nil || q.cl == nil {
		return true
	}
	cl, ok := h.server.Clients.Get(q.cl.ID)
	return ok && cl == q.cl && !cl.Closed()
}

// reply publishes one answer message to the requester's response topic.
func (h *History) reply(q query, page historyPage) {
	if h.server == nil {
		return
	}
	h.once.Do(func() { h.inline = h.server.NewClient(nil, "local", "veil-history", true) })
	body, err := json.Marshal(page)
	if err != nil {
		h.log.Error().Err(err).Msg("history reply")
		return
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   q.replyTo,
		Payload:     body,
		PacketID:    1,
		Properties:  packets.Properties{CorrelationData: q.correlation, ContentType: "application/json"},
	}
	// The page is the requester's: the client holding its id when the
	// answer is ready may be someone else's, the requester having gone
	// (Addressee). mochi decides the deliveries of an injected packet
	// before InjectPacket returns.
	h.replying.Lock()
	defer h.replying.Unlock()
	h.addressee.Store(&addressedReply{topic: q.replyTo, to: q.cl})
	defer h.addressee.Store(nil)
	if err := h.server.InjectPacket(h.inline, pk); err != nil {
		h.log.Warn().Err(err).Str("topic", q.replyTo).Msg("history reply not sent")
	}
}

func (h *History) count(what string) {
	if h.metrics != nil {
		h.metrics.count(what)
	}
}
