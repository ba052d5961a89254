package operators_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// The end-to-end test of issue 6: the real binaries as processes. A
// simulated dht22 and a simulated smartlock enrol against a running
// `veil serve`; the locksmith Patrick claims both with their claim codes and
// hands them over to An; a doctor under An's policy sees rounded
// temperatures; Ruth unlocks inside her window and is refused outside it;
// the lock's retained state reaches only those allowed; readings taken while
// the broker is down arrive after its restart with their original ts.

var bins struct{ veil, operator string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "veil-operators-e2e-")
	if err != nil {
		panic(err)
	}
	bins.veil, bins.operator = filepath.Join(dir, "veil"), filepath.Join(dir, "veil-operator")
	for out, pkg := range map[string]string{bins.veil: "./cmd/veil", bins.operator: "./cmd/veil-operator"} {
		// Under the race detector: this is the one test that runs the whole
		// broker, mochi included, as a process (a race report fails it, see stop).
		cmd := exec.Command("go", "build", "-race", "-o", out, pkg)
		cmd.Dir = ".."
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const bootstrap = `
users:
  - {name: an, password: an-pass}
  - {name: patrick, password: patrick-pass, attributes: {certified_installer: true, company: lockworks}}
  - {name: ruth, password: ruth-pass}
  - {name: doctor, password: doctor-pass, attributes: {role: doctor}}
  - {name: stranger, password: stranger-pass}
factory:
  - {serial: TH-10-0042, secret: factory-secret-0042, model: TH-10, vendor: Thermo}
  - {serial: JL-200-0001, secret: factory-secret-0001, model: JL-200, vendor: jLock}
`

// veilServer is `veil serve` as a process.
type veilServer struct {
	t                    *testing.T
	dir, mqttAddr, httpA string
	cmd                  *exec.Cmd
	log                  *syncBuffer
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newVeil(t *testing.T) *veilServer {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bootstrap.yaml"), []byte(bootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	v := &veilServer{t: t, dir: dir, mqttAddr: freeAddr(t), httpA: freeAddr(t), log: &syncBuffer{}}
	t.Cleanup(func() {
		v.stop()
		if t.Failed() {
			t.Logf("veil serve log:\n%s", v.log.String())
		}
	})
	return v
}

func (v *veilServer) start() {
	v.t.Helper()
	v.cmd = exec.Command(bins.veil, "serve", "--mqtt", v.mqttAddr, "--http", v.httpA, "--data-dir", filepath.Join(v.dir, "data"),
		"--bootstrap", filepath.Join(v.dir, "bootstrap.yaml"), "--log-level", "warn")
	v.cmd.Stdout, v.cmd.Stderr = v.log, v.log
	if err := v.cmd.Start(); err != nil {
		v.t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		r, err := http.Get("http://" + v.httpA + "/readyz")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("veil serve not ready within 90 s:\n%s", v.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (v *veilServer) stop() {
	if v.cmd == nil || v.cmd.Process == nil {
		return
	}
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = v.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = v.cmd.Process.Kill()
		<-done
	}
	v.cmd = nil
	if log := v.log.String(); strings.Contains(log, "WARNING: DATA RACE") {
		v.t.Errorf("veil serve reported a data race:\n%s", log)
	}
}

// operator is veil-operator as a process.
type operator struct {
	cmd       *exec.Cmd
	log       *syncBuffer
	thing     string
	claimCode string
}

var (
	enrolledRe = regexp.MustCompile(`enrolled as thing (\S+)`)
	claimRe    = regexp.MustCompile(`claim code: (\S+)`)
)

func startOperator(t *testing.T, v *veilServer, name string, args ...string) *operator {
	t.Helper()
	o := &operator{log: &syncBuffer{}}
	creds := filepath.Join(v.dir, name+".json")
	o.cmd = exec.Command(bins.operator, append([]string{name, "--simulate", "--broker", "mqtt://" + v.mqttAddr,
		"--credentials", creds, "--backoff-min", "200ms", "--backoff-max", "1s", "--log-format", "console", "--log-level", "debug"}, args...)...)
	stdout, err := o.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	o.cmd.Stderr = o.log
	if err := o.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = o.cmd.Process.Signal(syscall.SIGTERM)
		_ = o.cmd.Wait()
		if strings.Contains(o.log.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, o.log.String())
		}
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(60 * time.Second)
	for o.thing == "" || o.claimCode == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s exited before printing its claim code:\n%s", name, o.log.String())
			}
			if m := enrolledRe.FindStringSubmatch(l); m != nil {
				o.thing = m[1]
			}
			if m := claimRe.FindStringSubmatch(l); m != nil {
				o.claimCode = m[1]
			}
		case <-timeout:
			t.Fatalf("%s printed no claim code within 60 s:\n%s", name, o.log.String())
		}
	}
	st, err := os.Stat(creds)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s credentials %s: %v mode %v; want 0600", name, creds, err, st.Mode().Perm())
	}
	return o
}

// client is an MQTT v5 test client; config answers arrive on replies.
type client struct {
	*paho.Client
	t       *testing.T
	id      string
	msgs    chan *paho.Publish
	replies chan *paho.Publish
	n       int
}

type dialOpts struct {
	clientID string
	keep     bool // persistent session (clean start off, 1 h expiry)
}

func dial(t *testing.T, v *veilServer, user, pass string, o dialOpts) *client {
	t.Helper()
	conn, err := net.Dial("tcp", v.mqttAddr)
	if err != nil {
		t.Fatal(err)
	}
	if o.clientID == "" {
		o.clientID = user + "-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	c := &client{t: t, id: o.clientID, msgs: make(chan *paho.Publish, 1000), replies: make(chan *paho.Publish, 100)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			if strings.HasPrefix(pr.Packet.Topic, "$config/replies/") {
				c.replies <- pr.Packet
			} else {
				c.msgs <- pr.Packet
			}
			return true, nil
		}}})
	cp := &paho.Connect{ClientID: o.clientID, KeepAlive: 30, CleanStart: !o.keep, Username: user, UsernameFlag: true,
		Password: []byte(pass), PasswordFlag: true}
	if o.keep {
		exp := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	c.subscribe(0x00, "$config/replies/"+o.clientID+"/#")
	return c
}

// subscribe subscribes and checks the SUBACK code (0x00–0x02 granted).
func (c *client) subscribe(want byte, filter string) {
	c.t.Helper()
	var got byte
	// A resumed session may hold the broker's in-flight packet ids, which
	// mochi also refuses for the client's own packets (0x91): take another.
	for attempt := 0; attempt < 10; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		cancel()
		if sa == nil {
			c.t.Fatalf("%s subscribe %s: %v", c.id, filter, err)
		}
		if got = sa.Reasons[0]; got != 0x91 {
			break
		}
	}
	if (want <= 2 && got > 2) || (want > 2 && got != want) {
		c.t.Fatalf("%s subscribe %s: 0x%02x, want 0x%02x", c.id, filter, got, want)
	}
}

// publish sends at QoS 1 and returns the PUBACK reason code.
func (c *client) publish(topic, payload string) byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if r != nil {
		return r.ReasonCode
	}
	if err != nil {
		c.t.Fatalf("%s publish %s: %v", c.id, topic, err)
	}
	return 0
}

// config publishes a configuration request and returns the broker's answer.
func (c *client) config(topic, payload string) map[string]any {
	c.t.Helper()
	c.n++
	corr := []byte(fmt.Sprint(c.n))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload),
		Properties: &paho.PublishProperties{ResponseTopic: "$config/replies/" + c.id + "/r", CorrelationData: corr}})
	for {
		select {
		case p := <-c.replies:
			if p.Properties == nil || !bytes.Equal(p.Properties.CorrelationData, corr) {
				continue
			}
			var ans map[string]any
			if err := json.Unmarshal(p.Payload, &ans); err != nil {
				c.t.Fatalf("answer to %s: %v: %s", topic, err, p.Payload)
			}
			return ans
		case <-time.After(10 * time.Second):
			c.t.Fatalf("%s: no answer to %s", c.id, topic)
		}
	}
}

func (c *client) mustConfig(topic, payload string) map[string]any {
	c.t.Helper()
	ans := c.config(topic, payload)
	if ans["ok"] != true {
		c.t.Fatalf("%s %s %s: %v", c.id, topic, payload, ans)
	}
	return ans
}

// next returns the next message on topic (others are skipped), or fails.
func (c *client) next(topic string, within time.Duration) *paho.Publish {
	c.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case p := <-c.msgs:
			if p.Topic == topic {
				return p
			}
		case <-deadline:
			c.t.Fatalf("%s: nothing on %s within %s", c.id, topic, within)
		}
	}
}

// drain discards what has arrived so far.
func (c *client) drain() {
	for {
		select {
		case <-c.msgs:
		default:
			return
		}
	}
}

// none asserts nothing arrives on topic within quiet.
func (c *client) none(topic string, quiet time.Duration) {
	c.t.Helper()
	deadline := time.After(quiet)
	for {
		select {
		case p := <-c.msgs:
			if p.Topic == topic {
				c.t.Fatalf("%s received %s: %s", c.id, p.Topic, p.Payload)
			}
		case <-deadline:
			return
		}
	}
}

type lockState struct {
	Online bool   `json:"online"`
	Locked bool   `json:"locked"`
	Door   string `json:"door"`
	By     string `json:"by"`
	At     string `json:"at"`
}

// waitState waits for a lock state matching ok.
func (c *client) waitState(topic string, within time.Duration, ok func(lockState) bool) lockState {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		p := c.next(topic, time.Until(deadline))
		var s lockState
		if err := json.Unmarshal(p.Payload, &s); err != nil {
			c.t.Fatalf("state %s: %v", p.Payload, err)
		}
		if ok(s) {
			return s
		}
	}
}

type reading struct {
	Temperature float64 `json:"temperature"`
	TS          string  `json:"ts"`
}

func parseReading(t *testing.T, p *paho.Publish) (float64, time.Time) {
	t.Helper()
	var r reading
	if err := json.Unmarshal(p.Payload, &r); err != nil {
		t.Fatalf("reading %s: %v", p.Payload, err)
	}
	ts, err := time.Parse(time.RFC3339Nano, r.TS)
	if err != nil {
		t.Fatalf("reading %s: ts: %v", p.Payload, err)
	}
	return r.Temperature, ts
}

func TestOperatorsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts veil serve and two operators")
	}
	v := newVeil(t)
	v.start()

	dht := startOperator(t, v, "dht22", "--serial", "TH-10-0042", "--factory-secret", "factory-secret-0042", "--interval", "300ms")
	lock := startOperator(t, v, "smartlock", "--serial", "JL-200-0001", "--factory-secret", "factory-secret-0001", "--relock-after", "2s")
	tempTopic := "things/" + dht.thing + "/data/temperature"
	stateTopic := "things/" + lock.thing + "/state"
	unlockTopic := "things/" + lock.thing + "/cmd/unlock"

	// The locksmith claims both things with the printed claim codes…
	patrick := dial(t, v, "patrick", "patrick-pass", dialOpts{})
	for _, o := range []*operator{dht, lock} {
		ans := patrick.mustConfig("$config/things/"+o.thing+"/claim", fmt.Sprintf(`{"code":%q}`, o.claimCode))
		if ans["relation"] != "installer" {
			t.Fatalf("claim of %s: %v", o.thing, ans)
		}
	}
	// …may operate the lock while installing…
	patrick.subscribe(0, stateTopic)
	if code := patrick.publish(unlockTopic, `{"by":"patrick"}`); code >= 0x80 {
		t.Fatalf("the installer's unlock before hand-over: 0x%02x", code)
	}
	patrick.waitState(stateTopic, 10*time.Second, func(s lockState) bool { return !s.Locked && s.By == "patrick" })
	// The simulated person walks through and the lock relocks; only then
	// is the lock idle until Ruth's unlock, after the hand-over.
	patrick.waitState(stateTopic, 15*time.Second, func(s lockState) bool { return s.Locked && s.By == "auto" })

	// …and hands both over to An, who accepts.
	an := dial(t, v, "an", "an-pass", dialOpts{clientID: "an-console", keep: true})
	for _, o := range []*operator{dht, lock} {
		inv := patrick.mustConfig("$config/things/"+o.thing+"/relations/an", `{"relation":"owner"}`)
		an.mustConfig(fmt.Sprintf("$config/invitations/an/%v/answer", inv["invitation"]), `{"accept":true}`)
	}
	// From now on Patrick can do nothing with the lock, nor see it.
	patrick.drain()
	if code := patrick.publish(unlockTopic, `{"by":"patrick"}`); code != 0x87 {
		t.Fatalf("the installer's unlock after hand-over: 0x%02x, want 0x87", code)
	}

	// An's policy: doctors see the temperature rounded to whole degrees.
	an.mustConfig("$config/users/an/policies/doctor-temperature", fmt.Sprintf(`{"id":"doctor-temperature","priority":10,"effect":"allow",
		"subjects":["role:doctor"],"resources":[%q],"actions":["read"],
		"constraints":[{"kind":"accuracy","field":"temperature","step":1}]}`, tempTopic))
	an.subscribe(0, tempTopic)
	doctor := dial(t, v, "doctor", "doctor-pass", dialOpts{})
	doctor.subscribe(0, tempTopic)
	raw := map[string][]float64{} // ts → An's raw values (millisecond stamps may repeat)
	var fractional bool
	for i := 0; i < 8; i++ {
		val, ts := parseReading(t, an.next(tempTopic, 10*time.Second))
		raw[ts.Format(time.RFC3339Nano)] = append(raw[ts.Format(time.RFC3339Nano)], val)
		fractional = fractional || val != math.Trunc(val)
	}
	if !fractional {
		t.Fatalf("An (owner) saw no raw decimals: %v", raw)
	}
	for checked := 0; checked < 4; {
		val, ts := parseReading(t, doctor.next(tempTopic, 10*time.Second))
		if val != math.Trunc(val) {
			t.Fatalf("the doctor saw an unrounded temperature %v", val)
		}
		if rs, ok := raw[ts.Format(time.RFC3339Nano)]; ok {
			if !slices.ContainsFunc(rs, func(r float64) bool { return math.Round(r) == val }) {
				t.Fatalf("doctor got %v at %s for raw %v", val, ts.Format(time.RFC3339Nano), rs)
			}
			checked++
		}
		for len(an.msgs) > 0 { // keep An's map current
			p := <-an.msgs
			if p.Topic == tempTopic {
				r, ts := parseReading(t, p)
				raw[ts.Format(time.RFC3339Nano)] = append(raw[ts.Format(time.RFC3339Nano)], r)
			}
		}
	}

	// Ruth is invited as a visitor for this evening and accepts.
	now := time.Now().UTC()
	ruth := dial(t, v, "ruth", "ruth-pass", dialOpts{})
	inv := an.mustConfig("$config/things/"+lock.thing+"/relations/ruth", fmt.Sprintf(`{"relation":"visitor","valid_from":%q,"valid_until":%q}`,
		now.Add(-time.Minute).Format(time.RFC3339), now.Add(2*time.Hour).Format(time.RFC3339)))
	ruth.mustConfig(fmt.Sprintf("$config/invitations/ruth/%v/answer", inv["invitation"]), `{"accept":true}`)

	// The retained state: An and Ruth get it; the doctor, a stranger and
	// the former installer do not.
	an.subscribe(0, stateTopic)
	if s := an.waitState(stateTopic, 5*time.Second, func(lockState) bool { return true }); !s.Online {
		t.Fatalf("An's retained state %+v", s)
	}
	ruth.subscribe(0, stateTopic)
	ruth.waitState(stateTopic, 5*time.Second, func(lockState) bool { return true })
	stranger := dial(t, v, "stranger", "stranger-pass", dialOpts{})
	for _, c := range []*client{doctor, stranger} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: stateTopic, QoS: 1}, {Topic: "things/+/state", QoS: 1}}})
		cancel()
		if err == nil && sa.Reasons[0] <= 2 {
			t.Fatalf("%s may subscribe to the lock's state", c.id)
		}
	}

	// Ruth unlocks inside her window: the lock moves and says who did it.
	if code := ruth.publish(unlockTopic, fmt.Sprintf(`{"by":"ruth","ts":%q}`, time.Now().UTC().Format(time.RFC3339Nano))); code >= 0x80 {
		t.Fatalf("Ruth's unlock inside her window: 0x%02x", code)
	}
	an.waitState(stateTopic, 10*time.Second, func(s lockState) bool { return !s.Locked && s.By == "ruth" })
	ruth.waitState(stateTopic, 10*time.Second, func(s lockState) bool { return !s.Locked && s.By == "ruth" })
	// The simulated person walks through; the door closes; the lock relocks.
	an.waitState(stateTopic, 15*time.Second, func(s lockState) bool { return s.Locked && s.By == "auto" && s.Door == "closed" })

	// Ruth's window moves to tomorrow (she accepts again): now she is outside it.
	inv = an.mustConfig("$config/things/"+lock.thing+"/relations/ruth", fmt.Sprintf(`{"relation":"visitor","valid_from":%q,"valid_until":%q}`,
		now.Add(24*time.Hour).Format(time.RFC3339), now.Add(26*time.Hour).Format(time.RFC3339)))
	ruth.mustConfig(fmt.Sprintf("$config/invitations/ruth/%v/answer", inv["invitation"]), `{"accept":true}`)
	if code := ruth.publish(unlockTopic, `{"by":"ruth"}`); code != 0x87 {
		t.Fatalf("Ruth's unlock outside her window: 0x%02x, want 0x87", code)
	}
	for _, c := range []*client{doctor, stranger, patrick} {
		c.none(stateTopic, 0)
	}
	an.none(stateTopic, 1500*time.Millisecond) // the lock did not move
	if code := an.publish("things/"+lock.thing+"/cmd/unlock", `{"by":"an"}`); code >= 0x80 {
		t.Fatalf("the owner's unlock: 0x%02x", code)
	}
	an.waitState(stateTopic, 10*time.Second, func(s lockState) bool { return !s.Locked && s.By == "an" })
	for _, c := range []*client{doctor, stranger, patrick} {
		c.none(stateTopic, 300*time.Millisecond)
	}

	// Offline buffering: the broker goes down for a while; the dht22 keeps
	// reading; after the restart An receives the readings taken meanwhile,
	// in order, with their original ts. (Delivery is at-least-once: a
	// reading in flight when the broker stopped may come again, and An's
	// resumed session may resend what it had in flight; readings taken once
	// the broker was gone are new and must arrive in the order taken.)
	v.stop()
	stopped := time.Now() // the process has exited: nothing after this reached it
	time.Sleep(5 * time.Second)
	restarted := time.Now()
	v.start()
	an2 := dial(t, v, "an", "an-pass", dialOpts{clientID: "an-console", keep: true})
	an2.subscribe(0, tempTopic)
	var outage []time.Time
	seen := map[time.Time]bool{}
	deadline := time.After(30 * time.Second)
collect:
	for len(outage) < 5 {
		select {
		case p := <-an2.msgs:
			if p.Topic != tempTopic {
				continue
			}
			_, ts := parseReading(t, p)
			if seen[ts] || !ts.After(stopped) || !ts.Before(restarted) {
				seen[ts] = true
				continue
			}
			seen[ts] = true
			if n := len(outage); n > 0 && ts.Before(outage[n-1]) {
				t.Fatalf("outage readings out of order: %s after %s", ts.Format(time.StampMilli), outage[n-1].Format(time.StampMilli))
			}
			outage = append(outage, ts)
		case <-deadline:
			break collect
		}
	}
	if len(outage) < 5 {
		t.Fatalf("%d readings from the outage %s–%s arrived after the restart, want at least 5", len(outage),
			stopped.Format(time.StampMilli), restarted.Format(time.StampMilli))
	}
}

// syncBuffer is a goroutine-safe bytes.Buffer for process output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)
