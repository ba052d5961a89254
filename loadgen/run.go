package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Scenarios.
const (
	FanOut       = "fanout"       // 1 publisher → N subscribers in three views
	FanIn        = "fanin"        // N things → 1 subscriber
	P2P          = "p2p"          // N publisher/subscriber pairs
	Idle         = "idle"         // N connected idle clients (memory per client)
	PolicyChange = "policychange" // fan-out at full rate while the owner denies the doctor
)

// Profiles: what each kind of broker entitles the household's subscribers to.
const (
	ProfileVeil      = "veil"      // owner raw, doctor rounded, stranger none
	ProfileMochi     = "mochi"     // allow-all: owner and doctor raw; the stranger subscribes where nothing is published
	ProfileMosquitto = "mosquitto" // ACL file: owner raw, doctor raw (no rewriting), stranger none
)

// Config describes one run.
type Config struct {
	Addr        string        // broker host:port
	Broker      string        // label in the result (veil, mochi, mosquitto)
	Profile     string        // entitlement profile (ProfileVeil …)
	Scenario    string        // FanOut, FanIn, P2P, Idle, PolicyChange
	QoS         byte          // 0 or 1
	Clients     int           // fanout: subscribers; fanin: publishers; p2p: pairs; idle: clients
	PayloadSize int           // bytes per published payload (at least the header, ~80)
	Rate        float64       // published msg/s over all publishers; 0 = as fast as delivered
	Duration    time.Duration // publishing phase
	Window      int           // max mode: messages in flight over all flows before publishers wait
	Passwords   map[string]string
	BrokerPID   int // the broker process whose memory (idle) or CPU time (other scenarios) is measured
	// MetricsURL is the broker's /metrics (Veil, with enforcement on or
	// off): its histograms of the time enforcement adds to deliveries and
	// of the publish span are read before and after the run.
	MetricsURL string
	Round      int
	Tag        string
	Log        io.Writer // progress; nil = silent
}

// DefaultPasswords are the example household's (examples/bootstrap.yaml);
// a thing's secret is "{id}-secret".
func DefaultPasswords() map[string]string {
	return map[string]string{"an": "an-secret", "doctor": "doctor-secret", "stranger": "stranger-secret"}
}

func (c *Config) password(name string) string {
	if p, ok := c.Passwords[name]; ok {
		return p
	}
	return name + "-secret"
}

// Validate reports bad settings.
func (c *Config) Validate() error {
	var errs []error
	switch c.Scenario {
	case FanOut, FanIn, P2P, Idle, PolicyChange:
	default:
		errs = append(errs, fmt.Errorf("--scenario %q: want fanout, fanin, p2p, idle or policychange", c.Scenario))
	}
	switch c.Profile {
	case ProfileVeil, ProfileMochi, ProfileMosquitto:
	default:
		errs = append(errs, fmt.Errorf("--profile %q: want veil, mochi or mosquitto", c.Profile))
	}
	if c.QoS > 1 {
		errs = append(errs, fmt.Errorf("--qos %d: want 0 or 1", c.QoS))
	}
	if c.Clients < 1 {
		errs = append(errs, fmt.Errorf("--clients %d: must be at least 1", c.Clients))
	}
	if c.Scenario == FanOut && c.Clients < 3 {
		errs = append(errs, fmt.Errorf("--clients %d: fanout needs at least 3 subscribers (one per view)", c.Clients))
	}
	if c.PayloadSize < 0 || c.PayloadSize > 1<<20 {
		errs = append(errs, fmt.Errorf("--payload %d: want 0 to 1 MiB", c.PayloadSize))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("--rate %g: must not be negative", c.Rate))
	}
	if c.Duration <= 0 && c.Scenario != Idle {
		errs = append(errs, fmt.Errorf("--duration %s: must be positive", c.Duration))
	}
	if c.Window < 1 {
		errs = append(errs, fmt.Errorf("--window %d: must be at least 1", c.Window))
	}
	if c.Scenario == PolicyChange && c.Profile != ProfileVeil {
		errs = append(errs, errors.New("--scenario policychange needs --profile veil (a live policy change is Veil's control plane)"))
	}
	return errors.Join(errs...)
}

// recvFlow is what one receiver got of one flow.
type recvFlow struct {
	next  atomic.Uint64 // highest seq seen + 1
	count atomic.Int64  // distinct messages
	seen  []uint64      // bitset of seqs (guarded by receiver.mu)
}

// receiver is one subscribing client.
type receiver struct {
	name   string
	user   string
	filter string
	view   View
	client *paho.Client
	flows  []*recvFlow // by flow id; nil for flows it does not subscribe to
	last   atomic.Int64

	mu      sync.Mutex
	lat     []time.Duration
	dups    int64
	foreign int64 // deliveries of flows it never subscribed to
	got     atomic.Int64
}

// flow is one publisher and its topic.
type flow struct {
	id      int
	thing   string
	topic   string
	client  *paho.Client
	sent    atomic.Uint64
	waitFor []*recvFlow // entitled receivers, for the max-rate window
}

type run struct {
	cfg        Config
	flows      []*flow
	receivers  []*receiver
	violations atomic.Int64
	vmu        sync.Mutex
	vlog       []string
	clientErrs atomic.Int64
	refusedMu  sync.Mutex
	refused    int

	// policy change: receivers of the doctor's view must get nothing
	// published after cutSeq (set once the change is acknowledged).
	cutSeq  atomic.Uint64
	cut     atomic.Bool
	restore func() error // puts the changed policy back
}

func (r *run) logf(format string, a ...any) {
	if r.cfg.Log != nil {
		fmt.Fprintf(r.cfg.Log, format+"\n", a...)
	}
}

func (r *run) violation(msg string) {
	r.violations.Add(1)
	r.vmu.Lock()
	if len(r.vlog) < 10 {
		r.vlog = append(r.vlog, msg)
	}
	r.vmu.Unlock()
}

// IdleFilter is the fan-out stranger's subscription under the mochi
// profile. Without an ACL plain mochi would deliver every message to the
// stranger too, half as many deliveries again as Veil and Mosquitto make,
// and the comparison would measure that extra traffic instead of the cost
// of enforcement. Subscribed where nothing is published, the strangers stay
// connected and subscribed while mochi makes exactly the deliveries Veil
// makes — what Veil adds is deciding, denying and rewriting.
const IdleFilter = "veil-bench/nothing/#"

// entitlement of each principal under a profile.
func entitled(profile, user string) View {
	switch profile {
	case ProfileMochi:
		if user == "stranger" {
			return None // subscribed to IdleFilter
		}
		return Raw
	case ProfileMosquitto:
		if user == "stranger" {
			return None
		}
		return Raw
	}
	switch user {
	case "an":
		return Raw
	case "doctor":
		return Rounded
	}
	return None
}

// Run executes one scenario and returns its result. The error is for runs
// that could not happen (connection refused …); a run that happened but
// leaked, lost entitled messages at QoS 1 or stalled has OK=false.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Passwords == nil {
		cfg.Passwords = DefaultPasswords()
	}
	if cfg.Scenario == Idle {
		return runIdle(ctx, cfg)
	}
	r := &run{cfg: cfg}
	defer r.close()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	return r.execute(ctx)
}

// setup connects and subscribes everybody.
func (r *run) setup(ctx context.Context) error {
	c := r.cfg
	type sub struct{ user, filter string }
	var subs []sub
	switch c.Scenario {
	case FanOut, PolicyChange:
		r.flows = []*flow{{id: 0, thing: "thermo-1", topic: "things/thermo-1/data/temperature"}}
		for i := range c.Clients {
			switch i % 3 {
			case 0:
				subs = append(subs, sub{"an", "things/thermo-1/data/temperature"})
			case 1:
				subs = append(subs, sub{"doctor", "things/thermo-1/data/temperature"})
			default:
				filter := "things/+/data/#"
				if c.Profile == ProfileMochi {
					filter = IdleFilter
				}
				subs = append(subs, sub{"stranger", filter})
			}
		}
	case FanIn:
		for i := range c.Clients {
			id := fmt.Sprintf("sensor-%d", i+1)
			r.flows = append(r.flows, &flow{id: i, thing: id, topic: "things/" + id + "/data/temperature"})
		}
		subs = append(subs, sub{"doctor", "things/+/data/temperature"})
	case P2P:
		for i := range c.Clients {
			id := fmt.Sprintf("sensor-%d", i+1)
			r.flows = append(r.flows, &flow{id: i, thing: id, topic: "things/" + id + "/data/temperature"})
			user := "an"
			if i%2 == 1 {
				user = "doctor"
			}
			subs = append(subs, sub{user, "things/" + id + "/data/temperature"})
		}
	}
	// Client ids unique to this run: a client id reused right after the
	// previous run's client with it disconnected can lose its subscriptions
	// to that client's clean-up (mochi).
	runID := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	for i, s := range subs {
		rc := &receiver{name: fmt.Sprintf("bench-%s-%s-%d", s.user, runID, i), user: s.user, filter: s.filter, view: entitled(c.Profile, s.user),
			flows: make([]*recvFlow, len(r.flows))}
		for _, f := range r.flows {
			if c.Scenario == P2P && f.id != i {
				continue
			}
			rf := &recvFlow{}
			rc.flows[f.id] = rf
			if rc.view == Raw || rc.view == Rounded && c.Scenario != PolicyChange {
				f.waitFor = append(f.waitFor, rf)
			}
		}
		r.receivers = append(r.receivers, rc)
	}
	// Connect subscribers, then subscribe, then the publishers. The first
	// client of each user connects alone: a broker verifying an argon2id
	// hash once per user then serves the others from its cache.
	first := map[string]bool{}
	var order []int
	for i, rc := range r.receivers {
		if !first[rc.user] {
			first[rc.user] = true
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	warm := len(first)
	subscribe := func(ctx context.Context, i int) error {
		rc := r.receivers[order[i]]
		cl, err := r.dial(ctx, rc.name, rc.user, rc.onPublish(r))
		if err != nil {
			return err
		}
		rc.client = cl
		sa, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: rc.filter, QoS: c.QoS}}})
		if sa != nil && len(sa.Reasons) > 0 && sa.Reasons[0] >= 0x80 {
			if rc.view == None {
				r.refusedMu.Lock()
				r.refused++
				r.refusedMu.Unlock()
				return nil
			}
			return fmt.Errorf("%s (entitled to %s) refused subscription to %s: reason %#x", rc.name, rc.view, rc.filter, sa.Reasons[0])
		}
		if err != nil {
			return fmt.Errorf("%s subscribing to %s: %w", rc.name, rc.filter, err)
		}
		return nil
	}
	for i := range warm {
		if err := subscribe(ctx, i); err != nil {
			return err
		}
	}
	err := parallel(ctx, len(r.receivers)-warm, 32, func(ctx context.Context, i int) error { return subscribe(ctx, warm+i) })
	if err != nil {
		return err
	}
	// Things connect two at a time: each is a first connect of its
	// principal, which Veil verifies with argon2id (64 MiB, about a core
	// for a while); more at once only queue up behind each other.
	return parallel(ctx, len(r.flows), 2, func(ctx context.Context, i int) error {
		f := r.flows[i]
		cl, err := r.dial(ctx, f.thing, f.thing, nil)
		if err != nil {
			return err
		}
		f.client = cl
		return nil
	})
}

// dial connects one MQTT v5 client.
func (r *run) dial(ctx context.Context, clientID, user string, onPub func(paho.PublishReceived) (bool, error)) (*paho.Client, error) {
	return dial(ctx, r.cfg.Addr, clientID, user, r.cfg.password(user), onPub, func(error) { r.clientErrs.Add(1) })
}

func dial(ctx context.Context, addr, clientID, user, pass string, onPub func(paho.PublishReceived) (bool, error), onErr func(error)) (*paho.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting %s to %s: %w", clientID, addr, err)
	}
	size := 32 << 10
	if onPub == nil {
		size = 1 << 10 // publishers and idle clients read only acks
	}
	cfg := paho.ClientConfig{Conn: newBufConn(conn, size), OnClientError: onErr}
	if onPub != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPub}
	}
	cl := paho.NewClient(cfg)
	ca, err := cl.Connect(dctx, &paho.Connect{ClientID: clientID, Username: user, UsernameFlag: true,
		Password: []byte(pass), PasswordFlag: true, CleanStart: true, KeepAlive: 300})
	if err != nil {
		_ = conn.Close()
		if ca != nil {
			return nil, fmt.Errorf("%s (user %s) refused: reason %#x %s", clientID, user, ca.ReasonCode, ca.Properties.ReasonString)
		}
		return nil, fmt.Errorf("%s (user %s): %w", clientID, user, err)
	}
	return cl, nil
}

// parallel runs fn(0..n-1) with at most width at a time; first error wins.
func parallel(ctx context.Context, n, width int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, width)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// onPublish is a receiver's delivery handler: latency, entitlement, counts.
func (rc *receiver) onPublish(r *run) func(paho.PublishReceived) (bool, error) {
	size := r.cfg.PayloadSize
	return func(pr paho.PublishReceived) (bool, error) {
		now := time.Now().UnixNano()
		p := pr.Packet.Payload
		rc.got.Add(1)
		h, ok := scanHeader(p)
		if !ok || h.flow < 0 || h.flow >= len(rc.flows) {
			r.violation(fmt.Sprintf("%s: unreadable or unknown payload on %s: %.80q", rc.name, pr.Packet.Topic, p))
			return true, nil
		}
		rf := rc.flows[h.flow]
		if rf == nil {
			rc.mu.Lock()
			rc.foreign++
			rc.mu.Unlock()
			r.violation(fmt.Sprintf("%s: received flow %d it never subscribed to (topic %s)", rc.name, h.flow, pr.Packet.Topic))
			return true, nil
		}
		if err := Check(rc.view, p, size); err != nil {
			r.violation(rc.name + ": " + err.Error())
			return true, nil
		}
		if r.cut.Load() && rc.view == Rounded && h.seq > r.cutSeq.Load() {
			r.violation(fmt.Sprintf("%s: leak: message %d published after the policy change (acknowledged after message %d) was delivered", rc.name, h.seq, r.cutSeq.Load()))
			return true, nil
		}
		rc.mu.Lock()
		word, bit := h.seq/64, h.seq%64
		for uint64(len(rf.seen)) <= word {
			rf.seen = append(rf.seen, make([]uint64, len(rf.seen)+64)...)
		}
		dup := rf.seen[word]&(1<<bit) != 0
		rf.seen[word] |= 1 << bit
		if dup {
			rc.dups++
		} else {
			rc.lat = append(rc.lat, time.Duration(now-h.sent))
		}
		rc.mu.Unlock()
		if !dup {
			rf.count.Add(1)
			for {
				n := rf.next.Load()
				if h.seq+1 <= n || rf.next.CompareAndSwap(n, h.seq+1) {
					break
				}
			}
			rc.last.Store(now)
		}
		return true, nil
	}
}

// publish sends message seq of f.
func (r *run) publish(ctx context.Context, f *flow, seq uint64) error {
	p := &paho.Publish{Topic: f.topic, QoS: r.cfg.QoS, Payload: Payload(f.id, seq, time.Now().UnixNano(), r.cfg.PayloadSize)}
	if r.cfg.QoS == 0 {
		_, err := f.client.Publish(ctx, p)
		return err
	}
	_, err := f.client.PublishWithOptions(ctx, p, paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	return err
}

// minNext is the lowest "next expected seq" over f's entitled receivers.
func (f *flow) minNext() uint64 {
	m := ^uint64(0)
	for _, rf := range f.waitFor {
		m = min(m, rf.next.Load())
	}
	return m
}

func (r *run) execute(ctx context.Context) (*Result, error) {
	c := r.cfg
	r.logf("%s %s qos%d clients=%d rate=%g: publishing for %s", c.Broker, c.Scenario, c.QoS, c.Clients, c.Rate, c.Duration)
	window := uint64(max(c.Window/len(r.flows), 4))
	var metricsStart map[string]histogram
	var metricsErr error
	if c.MetricsURL != "" {
		metricsStart, metricsErr = scrapeHistograms(ctx, c.MetricsURL, metricNames...)
	}
	cpuStart := r.brokerCPU()
	instr, instrStart := r.brokerInstructions()
	start := time.Now()
	deadline := start.Add(c.Duration)
	var (
		wg       sync.WaitGroup
		stalled  atomic.Bool
		pubErr   error
		pubErrMu sync.Mutex
	)
	var change *Change
	var changeErr error
	changeDone := make(chan struct{})
	if c.Scenario == PolicyChange {
		go func() {
			defer close(changeDone)
			change, changeErr = r.changePolicy(ctx, start.Add(c.Duration/2))
		}()
	} else {
		close(changeDone)
	}
	for _, f := range r.flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			perFlow := c.Rate / float64(len(r.flows))
			var seq uint64
			lastProgress, lastMin := time.Now(), uint64(0)
			for {
				now := time.Now()
				if now.After(deadline) || ctx.Err() != nil {
					break
				}
				if c.Rate > 0 {
					due := uint64(now.Sub(start).Seconds()*perFlow) + 1
					if seq >= due {
						next := start.Add(time.Duration(float64(seq) / perFlow * float64(time.Second)))
						time.Sleep(max(next.Sub(now), 20*time.Microsecond))
						continue
					}
				} else if len(f.waitFor) > 0 {
					m := f.minNext()
					if m != lastMin {
						lastMin, lastProgress = m, now
					}
					if seq-min(m, seq) >= window {
						if now.Sub(lastProgress) > 5*time.Second {
							stalled.Store(true)
							break
						}
						time.Sleep(20 * time.Microsecond)
						continue
					}
				}
				if err := r.publish(ctx, f, seq); err != nil {
					pubErrMu.Lock()
					if pubErr == nil {
						pubErr = fmt.Errorf("%s publishing: %w", f.thing, err)
					}
					pubErrMu.Unlock()
					break
				}
				seq++
				f.sent.Store(seq)
			}
		}()
	}
	wg.Wait()
	pubEnd := time.Now()
	<-changeDone
	// Drain: until every entitled receiver has every message, or nothing
	// moved for a second (QoS 0 may lose; 3 s at QoS 1), at most 20 s.
	quiet := time.Second
	if c.QoS > 0 {
		quiet = 3 * time.Second
	}
	var lastTotal int64 = -1
	lastMove := time.Now()
	for time.Since(pubEnd) < 20*time.Second {
		total, complete := r.progress()
		if complete {
			break
		}
		if total != lastTotal {
			lastTotal, lastMove = total, time.Now()
		} else if time.Since(lastMove) > quiet {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cpuEnd := r.brokerCPU()
	var instrEnd uint64
	if instr != nil {
		var err error
		if instrEnd, err = instr.read(); err != nil {
			r.logf("%v", err)
			instrEnd = 0
		}
		instr.close()
	}
	time.Sleep(50 * time.Millisecond) // late leaks to None receivers
	if change != nil {
		r.finishChange(change)
	}
	if r.restore != nil {
		if err := r.restore(); err != nil && changeErr == nil {
			changeErr = err
		}
	}
	res := r.result(start, pubEnd, stalled.Load(), pubErr, change, changeErr)
	if cpuStart >= 0 && cpuEnd >= cpuStart {
		res.BrokerCPU = cpuEnd - cpuStart
		if res.Delivered > 0 {
			res.CPUPerDelivered = res.BrokerCPU * 1e6 / float64(res.Delivered)
		}
	}
	if instrEnd > instrStart && res.Delivered > 0 {
		res.BrokerInstructions = float64(instrEnd - instrStart)
		res.KInstrPerDelivered = res.BrokerInstructions / 1000 / float64(res.Delivered)
	}
	if c.MetricsURL != "" && metricsErr == nil {
		var metricsEnd map[string]histogram
		if metricsEnd, metricsErr = scrapeHistograms(ctx, c.MetricsURL, metricNames...); metricsErr == nil {
			if e := enforcementTime(metricsStart, metricsEnd); e.PathSamples > 0 || e.EncodeSamples > 0 {
				res.Enforcement = e
			}
			res.PublishSpan = publishSpan(metricsStart, metricsEnd)
		}
	}
	if metricsErr != nil {
		res.Notes = append(res.Notes, metricsErr.Error())
	}
	return res, nil
}

// brokerInstructions starts counting the broker's instructions, or returns
// nil where perf events are unavailable (the report then has no such column).
func (r *run) brokerInstructions() (*instructions, uint64) {
	if r.cfg.BrokerPID <= 0 {
		return nil, 0
	}
	c, err := openInstructions(r.cfg.BrokerPID)
	if err != nil {
		r.logf("no instruction counts: %v", err)
		return nil, 0
	}
	n, err := c.read()
	if err != nil {
		r.logf("no instruction counts: %v", err)
		c.close()
		return nil, 0
	}
	return c, n
}

// brokerCPU is the broker's CPU seconds so far, or -1 if unknown.
func (r *run) brokerCPU() float64 {
	if r.cfg.BrokerPID <= 0 {
		return -1
	}
	s, err := CPUSeconds(r.cfg.BrokerPID)
	if err != nil {
		r.logf("%v", err)
		return -1
	}
	return s
}

// progress sums the distinct deliveries to entitled receivers and reports
// whether all of them have everything.
func (r *run) progress() (int64, bool) {
	var total int64
	complete := true
	for _, f := range r.flows {
		sent := int64(f.sent.Load())
		for _, rf := range f.waitFor {
			n := rf.count.Load()
			total += n
			if n < sent {
				complete = false
			}
		}
	}
	if r.cut.Load() {
		complete = false // the doctor's receivers lose what follows the cut: wait for quiet
	}
	return total, complete
}

func (r *run) result(start, pubEnd time.Time, stalled bool, pubErr error, change *Change, changeErr error) *Result {
	c := r.cfg
	res := &Result{Broker: c.Broker, Profile: c.Profile, Scenario: c.Scenario, QoS: c.QoS, Clients: c.Clients,
		PayloadSize: c.PayloadSize, RateTarget: c.Rate, Duration: pubEnd.Sub(start).Seconds(), Round: c.Round, Tag: c.Tag,
		RefusedSubs: r.refused, PolicyChange: change}
	views := map[View]int{}
	var lat []time.Duration
	lastDelivery := start
	for _, f := range r.flows {
		res.Sent += int64(f.sent.Load())
	}
	for _, rc := range r.receivers {
		views[rc.view]++
		rc.mu.Lock()
		lat = append(lat, rc.lat...)
		res.Duplicate += rc.dups
		rc.mu.Unlock()
		if t := rc.last.Load(); t > lastDelivery.UnixNano() {
			lastDelivery = time.Unix(0, t)
		}
		for fid, rf := range rc.flows {
			if rf == nil {
				continue
			}
			n := rf.count.Load()
			if rc.view == None {
				res.Withheld += n
				continue
			}
			sent := int64(r.flows[fid].sent.Load())
			if c.Scenario == PolicyChange && rc.view == Rounded && change != nil {
				sent = int64(change.AtSeq) + 1 // entitled up to the change, nothing after
				if n > sent {
					n = sent
				}
			}
			res.Expected += sent
			res.Delivered += n
		}
	}
	res.Lost = res.Expected - res.Delivered
	starved := 0
	for _, rc := range r.receivers {
		if rc.view == None || rc.view == Rounded && c.Scenario == PolicyChange {
			continue
		}
		if rc.got.Load() == 0 {
			starved++
		}
	}
	for _, v := range []View{Raw, Rounded, None} {
		if views[v] > 0 {
			res.Views = append(res.Views, fmt.Sprintf("%s=%d", v, views[v]))
		}
	}
	res.SentPerSec = float64(res.Sent) / res.Duration
	if el := lastDelivery.Sub(start).Seconds(); el > 0 {
		res.DeliveredPerSec = float64(res.Delivered) / el
	}
	res.Latency = Summarize(lat)
	res.Violations = r.violations.Load()
	r.vmu.Lock()
	res.ViolationLog = append([]string(nil), r.vlog...)
	r.vmu.Unlock()
	if n := r.clientErrs.Load(); n > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d client errors", n))
	}
	var fail []string
	if res.Violations > 0 {
		fail = append(fail, fmt.Sprintf("%d leaked or mis-rewritten messages", res.Violations))
	}
	if starved > 0 && res.Sent > 0 {
		fail = append(fail, fmt.Sprintf("%d entitled subscribers received nothing", starved))
	}
	if stalled {
		fail = append(fail, "stalled: no delivery progress for 5 s")
	}
	if pubErr != nil {
		fail = append(fail, pubErr.Error())
	}
	if changeErr != nil {
		fail = append(fail, "policy change: "+changeErr.Error())
	}
	if c.QoS == 1 && res.Lost > 0 && c.Scenario != PolicyChange {
		fail = append(fail, fmt.Sprintf("%d QoS 1 messages lost", res.Lost))
	}
	if res.Sent == 0 {
		fail = append(fail, "nothing was published")
	}
	sort.Strings(res.Views)
	res.OK = len(fail) == 0
	res.FailureReason = strings.Join(fail, "; ")
	return res
}

func (r *run) close() {
	var wg sync.WaitGroup
	disc := func(cl *paho.Client) {
		if cl == nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
		}()
	}
	for _, f := range r.flows {
		disc(f.client)
	}
	for _, rc := range r.receivers {
		disc(rc.client)
	}
	wg.Wait()
}
