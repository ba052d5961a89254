// Package agent is what every Veil operator shares: enrolment with the
// factory credential, the thing's own connection (reconnecting with
// backoff, a will saying it is offline), a bounded buffer of readings that
// survives broker outages, and the dispatch of commands to actuators.
package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"
)

// Device is one kind of hardware an operator drives.
type Device interface {
	// Enrolment says what the device is (sent on $enroll/{serial}).
	Enrolment() Enrolment
	// Run reads the hardware and reports through out until ctx ends.
	Run(ctx context.Context, out Output) error
}

// Commander is a Device that accepts commands on things/{id}/cmd/{action}.
type Commander interface {
	Device
	// Actions lists the accepted actions (the last topic level).
	Actions() []string
	// Command handles one command for this thing with an accepted action.
	// It is called in the order commands arrive, never concurrently. A
	// command that arrived before Run's ctx ended may still be in Command
	// while Run stops, and return after it: a device whose stop must be
	// final (a lock locking on stop) refuses commands once stopped.
	Command(action string, payload []byte) error
}

// Output is how a device reports.
type Output interface {
	// Data publishes v (a JSON object that carries its own "ts") on
	// things/{id}/data/{stream}, through the buffer.
	Data(stream string, v any)
	// State replaces the thing's retained things/{id}/state.
	State(v any)
	// Thing is the thing id (known once enrolled).
	Thing() string
}

// Options configure Run.
type Options struct {
	Broker          *url.URL
	TLS             *tls.Config
	Serial          string // factory serial
	FactorySecret   string
	CredentialsFile string
	BufferSize      int           // readings kept while offline (oldest dropped beyond)
	BackoffMin      time.Duration // first reconnect delay
	BackoffMax      time.Duration // longest reconnect delay
	KeepAlive       uint16        // seconds
	Log             zerolog.Logger
	Stdout          io.Writer // where the claim code is printed
	// RefusedWait is how long an enrolment refused for now (ForNow)
	// waits before it is tried again; 0: 15 minutes, the broker's window.
	RefusedWait time.Duration
	// InsecurePlaintext allows mqtt:// or tcp:// to a broker that is not
	// on this machine (CheckBroker); off, such a broker is refused.
	InsecurePlaintext bool
}

func (o *Options) defaults() {
	if o.BufferSize <= 0 {
		o.BufferSize = 10000
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = time.Second
	}
	if o.RefusedWait <= 0 {
		o.RefusedWait = 15 * time.Minute
	}
	if o.BackoffMax <= o.BackoffMin {
		o.BackoffMax = max(60*time.Second, 2*o.BackoffMin)
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 30
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
}

// OfflineState is the will: retained on things/{id}/state when the
// operator goes away without saying goodbye (and on a clean stop).
var OfflineState = []byte(`{"online":false}`)

// Agent is a running operator connection.
type Agent struct {
	opts  Options
	dev   Device
	creds Credentials
	buf   *Buffer
	log   zerolog.Logger

	mu       sync.Mutex
	state    []byte // current retained state
	stateVer uint64 // bumped on every change and on every new connection
	sentVer  uint64 // the version last acknowledged by the broker
	kick     chan struct{}

	cmds chan *paho.Publish
}

// checkBroker refuses plaintext to a remote broker unless allowed, and
// warns when it is allowed.
func (o *Options) checkBroker() error {
	remote, err := CheckBroker(o.Broker, o.InsecurePlaintext)
	if err != nil {
		return err
	}
	if remote {
		o.Log.Warn().Str("broker", o.Broker.Redacted()).Bool("insecure_plaintext", true).
			Msg("plain MQTT to a remote broker: the thing's secret, the factory secret at enrolment and every command travel unencrypted")
	}
	return nil
}

// EnsureEnrolled returns the stored credentials or, on first start, enrols
// (retrying with backoff on network errors), stores them with 0600
// permissions and prints the claim code. A plaintext broker that is not
// loopback is refused unless o.InsecurePlaintext.
func EnsureEnrolled(ctx context.Context, o Options, e Enrolment) (Credentials, error) {
	o.defaults()
	if err := o.checkBroker(); err != nil {
		return Credentials{}, err
	}
	return ensureEnrolled(ctx, o, e)
}

func ensureEnrolled(ctx context.Context, o Options, e Enrolment) (Credentials, error) {
	warn := func(s string) { o.Log.Warn().Msg(s) }
	c, err := LoadCredentials(o.CredentialsFile, warn)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, ErrNoCredentials) {
		return c, err
	}
	o.Log.Info().Str("serial", o.Serial).Str("broker", o.Broker.Redacted()).Msg("not enrolled yet: enrolling")
	backoff := autopaho.NewExponentialBackoff(o.BackoffMin, o.BackoffMax, o.BackoffMin, 2)
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		c, err = Enrol(actx, o.Broker, o.TLS, o.Serial, o.FactorySecret, e)
		cancel()
		if err == nil {
			break
		}
		// A lost answer (no reply, a dropped connection) is a network
		// error: retried, and the broker enrols an unclaimed thing again
		// with a new secret. A refusal is final.
		var rej *RejectedError
		if errors.As(err, &rej) && rej.ForNow {
			// Exiting would leave the device unenrolled for good (the
			// unit is not restarted on a refusal): five wrong guesses at
			// its serial by anyone would brick it.
			o.Log.Warn().Err(err).Dur("retry_in", o.RefusedWait).Msg("enrolment refused for now")
			select {
			case <-ctx.Done():
				return c, ctx.Err()
			case <-time.After(o.RefusedWait):
			}
			continue
		}
		if errors.As(err, &rej) {
			if rej.Reason == "already enrolled" {
				return c, fmt.Errorf("%w (serial %s: the thing has been claimed since it enrolled, and this device's credentials file %s is gone: an admin must re-provision it)", err, o.Serial, o.CredentialsFile)
			}
			return c, fmt.Errorf("%w (serial %s)", err, o.Serial)
		}
		if ctx.Err() != nil {
			return c, err
		}
		d := backoff(attempt)
		o.Log.Warn().Err(err).Dur("retry_in", d).Msg("enrolment failed")
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(d):
		}
	}
	if err := SaveCredentials(o.CredentialsFile, c); err != nil {
		return c, fmt.Errorf("enrolled as %s but could not store the credentials: %w", c.Thing, err)
	}
	o.Log.Info().Str("thing", c.Thing).Str("credentials", o.CredentialsFile).Msg("enrolled")
	fmt.Fprintf(o.Stdout, "enrolled as thing %s\nclaim code: %s\n", c.Thing, c.ClaimCode)
	return c, nil
}

// Run enrols if needed, then connects as the thing and runs dev until ctx
// ends (a plaintext broker that is not loopback is refused unless
// o.InsecurePlaintext). Readings taken while the broker is unreachable are buffered
// (bounded) and published, in order and with their original ts, once it is
// back.
func Run(ctx context.Context, o Options, dev Device) error {
	o.defaults()
	if err := o.checkBroker(); err != nil {
		return err
	}
	creds, err := ensureEnrolled(ctx, o, dev.Enrolment())
	if err != nil {
		return err
	}
	return newAgent(o, dev, creds).run(ctx)
}

func newAgent(o Options, dev Device, creds Credentials) *Agent {
	return &Agent{
		opts: o, dev: dev, creds: creds, buf: NewBuffer(o.BufferSize),
		log:   o.Log.With().Str("thing", creds.Thing).Logger(),
		state: []byte(`{"online":true}`), stateVer: 1,
		kick: make(chan struct{}, 1), cmds: make(chan *paho.Publish, 64),
	}
}

func (a *Agent) topic(parts ...string) string {
	return "things/" + a.creds.Thing + "/" + strings.Join(parts, "/")
}

func (a *Agent) run(ctx context.Context) error {
	id := a.creds.Thing
	cmdFilter := ""
	cmdr, isCmdr := a.dev.(Commander)
	if isCmdr {
		cmdFilter = a.topic("cmd", "+")
	}
	connCtx, stopConn := context.WithCancel(context.Background())
	defer stopConn()
	cfg := autopaho.ClientConfig{
		ServerUrls:       []*url.URL{a.opts.Broker},
		TlsCfg:           a.opts.TLS,
		KeepAlive:        a.opts.KeepAlive,
		ReconnectBackoff: autopaho.NewExponentialBackoff(a.opts.BackoffMin, a.opts.BackoffMax, a.opts.BackoffMin, 2),
		ConnectTimeout:   10 * time.Second,
		ConnectUsername:  id,
		ConnectPassword:  []byte(a.creds.Secret),
		WillMessage:      &paho.WillMessage{Topic: a.topic("state"), Payload: OfflineState, QoS: 1, Retain: true},
		AttemptConnection: func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			return Dial(ctx, u, a.opts.TLS)
		},
		// A clean session on every connection: the buffer, not the
		// session, carries readings across outages, and an actuator must
		// never act on a command queued while it was away.
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			cp.CleanStart = true
			return cp, nil
		},
		// A clean stop publishes the will too: the thing is offline.
		DisconnectPacketBuilder: func() *paho.Disconnect { return &paho.Disconnect{ReasonCode: 0x04} },
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			a.log.Info().Str("broker", a.opts.Broker.Redacted()).Int("buffered", a.buf.Len()).Msg("connected")
			a.mu.Lock()
			a.stateVer++ // the will may have replaced the retained state: publish it again
			a.mu.Unlock()
			a.kickSender()
			if isCmdr {
				go a.subscribe(cm, cmdFilter)
			}
		},
		OnConnectionDown: func() bool {
			a.log.Warn().Msg("connection lost; buffering readings")
			return true
		},
		OnConnectError: func(err error) {
			var ce *autopaho.ConnackError
			if errors.As(err, &ce) && (ce.ReasonCode == 0x86 || ce.ReasonCode == 0x87 || ce.ReasonCode == 0x85) {
				a.log.Error().Err(err).Str("credentials", a.opts.CredentialsFile).Msg("the broker refuses this thing's credentials")
				return
			}
			a.log.Warn().Err(err).Msg("connect failed; retrying with backoff")
		},
		ClientConfig: paho.ClientConfig{
			ClientID: id,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				select {
				case a.cmds <- pr.Packet:
				default:
					a.log.Warn().Str("topic", pr.Packet.Topic).Msg("command queue full; command dropped")
				}
				return true, nil
			}},
		},
	}
	cm, err := autopaho.NewConnection(connCtx, cfg)
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	senderCtx, stopSender := context.WithCancel(context.Background())
	wg.Add(1)
	go func() { defer wg.Done(); a.sender(senderCtx, cm) }()
	if isCmdr {
		wg.Add(1)
		go func() { defer wg.Done(); a.dispatch(ctx, cmdr) }()
	}

	devErr := a.dev.Run(ctx, a)
	if devErr != nil && ctx.Err() == nil {
		a.log.Error().Err(devErr).Msg("device stopped")
	}
	// Give the sender a moment to flush what is buffered.
	flush, cancelFlush := context.WithTimeout(context.Background(), 3*time.Second)
	for a.buf.Len() > 0 && flush.Err() == nil {
		select {
		case <-flush.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancelFlush()
	stopSender()
	wg.Wait()
	dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_ = cm.Disconnect(dctx)
	cancel()
	if n := a.buf.Len(); n > 0 {
		a.log.Warn().Int("unsent", n).Msg("stopped with readings still buffered")
	}
	if ctx.Err() != nil {
		return nil
	}
	return devErr
}

func (a *Agent) subscribe(cm *autopaho.ConnectionManager, filter string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil {
		a.log.Error().Err(err).Str("filter", filter).Msg("subscribe failed")
		return
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		a.log.Error().Str("filter", filter).Hex("reasons", sa.Reasons).Msg("subscribe refused by the broker")
		return
	}
	a.log.Info().Str("filter", filter).Msg("listening for commands")
}

// dispatch hands commands for this thing to the device, one at a time.
func (a *Agent) dispatch(ctx context.Context, c Commander) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-a.cmds:
			if ctx.Err() != nil {
				// select picks at random among ready cases: a command
				// queued when the stop came is not handed to a device
				// that is stopping.
				a.log.Warn().Str("topic", p.Topic).Msg("command dropped: stopping")
				return
			}
			action, err := CommandAction(p.Topic, a.creds.Thing, c.Actions())
			if err == nil {
				err = c.Command(action, p.Payload)
			}
			if err != nil {
				a.log.Warn().Err(err).Str("topic", p.Topic).Msg("command rejected")
				continue
			}
			a.log.Info().Str("action", action).Msg("command applied")
		}
	}
}

// CommandAction checks that topic is things/{thing}/cmd/{action} for this
// very thing and an accepted action, and returns the action.
func CommandAction(topic, thing string, accepted []string) (string, error) {
	prefix := "things/" + thing + "/cmd/"
	if thing == "" || !strings.HasPrefix(topic, prefix) {
		return "", fmt.Errorf("command topic %q is not for thing %q", topic, thing)
	}
	action := strings.TrimPrefix(topic, prefix)
	for _, ok := range accepted {
		if action == ok {
			return action, nil
		}
	}
	return "", fmt.Errorf("unknown action %q (accepted: %s)", action, strings.Join(accepted, ", "))
}

func (a *Agent) kickSender() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Thing implements Output.
func (a *Agent) Thing() string { return a.creds.Thing }

// Data implements Output.
func (a *Agent) Data(stream string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		a.log.Error().Err(err).Str("stream", stream).Msg("reading not encodable; dropped")
		return
	}
	if a.buf.Push(Message{Topic: a.topic("data", stream), Payload: b}) {
		a.log.Warn().Uint64("dropped_total", a.buf.Dropped()).Msg("offline buffer full: oldest reading dropped")
	}
}

// State implements Output.
func (a *Agent) State(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		a.log.Error().Err(err).Msg("state not encodable; dropped")
		return
	}
	a.mu.Lock()
	a.state = b
	a.stateVer++
	a.mu.Unlock()
	a.kickSender()
}

// Buffered is the number of readings waiting for the broker.
func (a *Agent) Buffered() int { return a.buf.Len() }

// sender publishes the current state when it changed (or on a new
// connection), then the buffered readings, oldest first, each removed only
// once the broker acknowledged it.
func (a *Agent) sender(ctx context.Context, cm *autopaho.ConnectionManager) {
	for ctx.Err() == nil {
		if err := cm.AwaitConnection(ctx); err != nil {
			return
		}
		a.mu.Lock()
		st, ver, pending := a.state, a.stateVer, a.stateVer != a.sentVer
		a.mu.Unlock()
		if pending {
			if a.publish(ctx, cm, Message{Topic: a.topic("state"), Payload: st, Retain: true}) {
				a.mu.Lock()
				if a.sentVer < ver {
					a.sentVer = ver
				}
				a.mu.Unlock()
			}
			continue
		}
		m, ok := a.buf.Peek()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-a.buf.Ready():
			case <-a.kick:
			}
			continue
		}
		if a.publish(ctx, cm, m) {
			a.buf.Pop(m)
		}
	}
}

// publish sends m at QoS 1 and reports whether it is done with: delivered,
// or refused by the broker for good (logged). A network error leaves it
// for the next attempt.
func (a *Agent) publish(ctx context.Context, cm *autopaho.ConnectionManager, m Message) bool {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pr, err := cm.Publish(pctx, &paho.Publish{Topic: m.Topic, QoS: 1, Retain: m.Retain, Payload: m.Payload})
	if pr != nil && pr.ReasonCode >= 0x80 {
		a.log.Error().Str("topic", m.Topic).Str("reason", fmt.Sprintf("0x%02x", pr.ReasonCode)).Msg("the broker refused the message; dropped")
		return true
	}
	if err != nil {
		if errors.Is(err, paho.ErrInvalidArguments) {
			a.log.Error().Err(err).Str("topic", m.Topic).Msg("message cannot be sent; dropped")
			return true
		}
		if ctx.Err() == nil && !errors.Is(err, autopaho.ConnectionDownError) {
			a.log.Debug().Err(err).Str("topic", m.Topic).Msg("publish failed; will retry")
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
		return false
	}
	return true
}
