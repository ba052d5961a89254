package loadgen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

func TestPayloadChecks(t *testing.T) {
	const size = 128
	p := Payload(3, 17, 1764100000123456789, size)
	if len(p) != size {
		t.Fatalf("payload is %d bytes, want %d: %s", len(p), size, p)
	}
	h, ok := scanHeader(p)
	if !ok || h.flow != 3 || h.seq != 17 || h.sent != 1764100000123456789 {
		t.Fatalf("header %+v %v", h, ok)
	}
	if err := Check(Raw, p, size); err != nil {
		t.Fatalf("raw payload judged wrong: %v", err)
	}
	// Temperature(17) = 20.173: the doctor's view is 20.2.
	rounded := []byte(strings.Replace(string(p), `"temperature":20.173`, `"temperature":20.2`, 1))
	if err := Check(Rounded, rounded, size); err != nil {
		t.Fatalf("correctly rounded payload judged wrong: %v", err)
	}
	if !sameButTemperature(h, rounded, p) {
		t.Error("the byte-for-byte fast path refused a correctly rounded payload")
	}
	// A rewriter may reorder fields and drop the padding's position: still fine.
	reordered := []byte(fmt.Sprintf(`{"temperature":20.2,"t":"1764100000123456789","s":"17","f":"3","pad":%q}`, padOf(t, p)))
	if err := Check(Rounded, reordered, size); err != nil {
		t.Fatalf("reordered rounded payload judged wrong: %v", err)
	}
	for name, c := range map[string]struct {
		v       View
		payload []byte
		want    string
	}{
		"raw to the doctor":        {Rounded, p, "leak: raw temperature"},
		"rounded wrongly":          {Rounded, []byte(strings.Replace(string(p), `20.173`, `20.1`, 1)), "want 20.2"},
		"another field altered":    {Rounded, []byte(strings.Replace(string(rounded), `xx"}`, `xy"}`, 1)), "altered"},
		"temperature not a number": {Rounded, []byte(strings.Replace(string(p), `20.173`, `"20.2"`, 1)), "not a number"},
		"a field smuggled in":      {Rounded, []byte(strings.Replace(string(p), `20.173`, `20.2,"x":1`, 1)), "fields"},
		"a field dropped":          {Rounded, []byte(`{"f":"3","s":"17","t":"1764100000123456789","temperature":20.2}`), "fields"},
		"rounded to the owner":     {Raw, rounded, "raw view altered"},
		"anything to the stranger": {None, p, "leak"},
		"garbage":                  {Raw, []byte("not json"), "unreadable"},
	} {
		err := Check(c.v, c.payload, size)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, c.want)
		}
	}
}

func padOf(t *testing.T, p []byte) string {
	t.Helper()
	_, after, ok := strings.Cut(string(p), `"pad":"`)
	if !ok {
		t.Fatal("no pad")
	}
	return strings.TrimSuffix(after, `"}`)
}

func TestPercentiles(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Microsecond)
	}
	l := Summarize(s)
	if l.Samples != 100 || l.P50 != 50 || l.P95 != 95 || l.P99 != 99 || l.Max != 100 {
		t.Fatalf("percentiles of 1..100 µs: %+v", l)
	}
	if got := Summarize([]time.Duration{7 * time.Microsecond}); got.P50 != 7 || got.P99 != 7 || got.Max != 7 {
		t.Fatalf("one sample: %+v", got)
	}
	if got := Summarize(nil); got != (Latency{}) {
		t.Fatalf("no samples: %+v", got)
	}
	if m := Median([]float64{3, 1, 2, 10}); m != 2.5 {
		t.Fatalf("median %v", m)
	}
}

// TestAccounting feeds deliveries straight into receivers: losses,
// duplicates, leaks and foreign flows are counted as they happened.
func TestAccounting(t *testing.T) {
	r := &run{cfg: Config{Scenario: FanOut, Profile: ProfileVeil, PayloadSize: 100, QoS: 0, Duration: time.Second}}
	f := &flow{id: 0, topic: "things/thermo-1/data/temperature"}
	r.flows = []*flow{f}
	owner := &receiver{name: "owner", view: Raw, flows: []*recvFlow{{}}}
	doctor := &receiver{name: "doctor", view: Rounded, flows: []*recvFlow{{}}}
	stranger := &receiver{name: "stranger", view: None, flows: []*recvFlow{{}}}
	r.receivers = []*receiver{owner, doctor, stranger}
	f.waitFor = []*recvFlow{owner.flows[0], doctor.flows[0]}
	deliver := func(rc *receiver, payload []byte) {
		_, _ = rc.onPublish(r)(paho.PublishReceived{Packet: &paho.Publish{Topic: f.topic, Payload: payload}})
	}
	start := time.Now()
	for seq := range uint64(10) {
		p := Payload(0, seq, time.Now().UnixNano(), 100)
		f.sent.Store(seq + 1)
		if seq != 4 { // the owner loses message 4
			deliver(owner, p)
		}
		if seq == 6 { // and gets message 6 twice
			deliver(owner, p)
		}
		deliver(doctor, []byte(strings.Replace(string(p), fmt.Sprintf("%.3f", Temperature(seq)), fmt.Sprintf("%.1f", Temperature(seq)), 1)))
	}
	if got := f.minNext(); got != 10 {
		t.Fatalf("window position %d, want 10", got)
	}
	res := r.result(start, time.Now(), false, nil, nil, nil)
	if res.Sent != 10 || res.Expected != 20 || res.Delivered != 19 || res.Lost != 1 || res.Duplicate != 1 || res.Violations != 0 || !res.OK {
		t.Fatalf("clean run with one loss and one duplicate: %+v", res)
	}
	if res.Latency.Samples != 19 {
		t.Fatalf("latency samples %d, want 19", res.Latency.Samples)
	}
	// A raw message to the doctor and anything to the stranger are leaks.
	deliver(doctor, Payload(0, 10, time.Now().UnixNano(), 100))
	deliver(stranger, Payload(0, 3, time.Now().UnixNano(), 100))
	deliver(owner, Payload(7, 3, time.Now().UnixNano(), 100)) // a flow nobody publishes
	res = r.result(start, time.Now(), false, nil, nil, nil)
	if res.Violations != 3 || res.OK || !strings.Contains(res.FailureReason, "3 leaked or mis-rewritten") {
		t.Fatalf("leaks not counted: violations %d ok %v %q %v", res.Violations, res.OK, res.FailureReason, res.ViolationLog)
	}
	// At QoS 1 a loss fails the run.
	r2 := &run{cfg: Config{Scenario: P2P, Profile: ProfileMochi, PayloadSize: 100, QoS: 1}}
	f2 := &flow{id: 0}
	f2.sent.Store(2)
	rc := &receiver{name: "x", view: Raw, flows: []*recvFlow{{}}}
	r2.flows, r2.receivers = []*flow{f2}, []*receiver{rc}
	_, _ = rc.onPublish(r2)(paho.PublishReceived{Packet: &paho.Publish{Payload: Payload(0, 0, time.Now().UnixNano(), 100)}})
	res = r2.result(start, time.Now(), false, nil, nil, nil)
	if res.Lost != 1 || res.OK {
		t.Fatalf("QoS 1 loss: %+v", res)
	}
}

// TestRunAgainstBrokers runs each scenario briefly against an in-process
// mochi with Veil's hooks (the household's entitlements hold, nothing
// leaks) and against plain mochi judged as if it were Veil (it leaks to
// the stranger and the doctor: the run must fail).
func TestRunAgainstBrokers(t *testing.T) {
	veil := startBroker(t, true)
	for _, sc := range []string{FanOut, FanIn, P2P} {
		for _, qos := range []byte{0, 1} {
			res, err := Run(context.Background(), Config{Addr: veil, Broker: "veil", Profile: ProfileVeil, Scenario: sc, QoS: qos,
				Clients: 6, PayloadSize: 100, Duration: 300 * time.Millisecond, Window: 50, Passwords: testPasswords})
			if err != nil {
				t.Fatalf("%s qos%d: %v", sc, qos, err)
			}
			if !res.OK || res.Violations != 0 || res.Delivered == 0 || res.Latency.Samples == 0 {
				t.Fatalf("%s qos%d against Veil: %+v", sc, qos, res)
			}
			if qos == 1 && res.Lost != 0 {
				t.Fatalf("%s qos1 lost %d", sc, res.Lost)
			}
		}
	}
	// Fixed rate: about the rate asked for.
	res, err := Run(context.Background(), Config{Addr: veil, Broker: "veil", Profile: ProfileVeil, Scenario: FanOut, Clients: 3,
		PayloadSize: 100, Rate: 200, Duration: time.Second, Window: 50, Passwords: testPasswords})
	if err != nil || !res.OK {
		t.Fatalf("fixed rate: %v %+v", err, res)
	}
	if res.Sent < 150 || res.Sent > 210 {
		t.Fatalf("fixed rate 200/s for 1 s sent %d", res.Sent)
	}

	leaky := startBroker(t, false)
	res, err = Run(context.Background(), Config{Addr: leaky, Broker: "mochi", Profile: ProfileVeil, Scenario: FanOut, Clients: 3,
		PayloadSize: 100, Duration: 200 * time.Millisecond, Window: 50, Passwords: testPasswords})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || res.Violations == 0 || !strings.Contains(res.FailureReason, "leaked") {
		t.Fatalf("a broker that leaks passed as Veil: %+v", res)
	}
	// The same broker judged as what it is passes.
	res, err = Run(context.Background(), Config{Addr: leaky, Broker: "mochi", Profile: ProfileMochi, Scenario: FanOut, Clients: 3,
		PayloadSize: 100, Duration: 200 * time.Millisecond, Window: 50, Passwords: testPasswords})
	if err != nil || !res.OK {
		t.Fatalf("plain mochi judged as mochi: %v %+v", err, res)
	}
	// …making the deliveries Veil makes: the owner's and the doctor's, none to the stranger.
	if res.Expected != 2*res.Sent || res.Withheld != 0 {
		t.Fatalf("plain mochi expected %d deliveries of %d messages (withheld %d); want the owner's and the doctor's only",
			res.Expected, res.Sent, res.Withheld)
	}
}

var testPasswords = map[string]string{"an": "an-secret", "doctor": "doctor-secret", "stranger": "stranger-secret"}

// startBroker runs mochi on a loopback port with Veil's hooks and the
// household (owner an; doctor sees temperatures rounded to 0.1; stranger
// nothing; things thermo-1 and sensor-1…6), or with allow-all.
func startBroker(t *testing.T, enforce bool) string {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if enforce {
		e := policies.NewEngine(policies.Options{Secret: []byte("test")})
		creds := hooks.NewCredentials()
		params := &argon2id.Params{Memory: 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}
		set := func(principal, secret string) {
			h, err := argon2id.CreateHash(secret, params)
			if err != nil {
				t.Fatal(err)
			}
			creds.Set(principal, h)
		}
		for _, u := range []policies.User{{Name: "an"}, {Name: "doctor", Attributes: policies.Attributes{"role": "doctor"}}, {Name: "stranger"}} {
			must(t, e.PutUser(u))
			set("user:"+u.Name, testPasswords[u.Name])
		}
		for _, id := range []string{"thermo-1", "sensor-1", "sensor-2", "sensor-3", "sensor-4", "sensor-5", "sensor-6"} {
			must(t, e.PutThing(policies.Thing{ID: id, Owner: "an", Kind: "sensor", Streams: []string{"temperature"}}))
			set("thing:"+id, id+"-secret")
		}
		p, err := policies.ParsePolicy([]byte(`{"id":"doctor-temperature","priority":1,"effect":"allow","subjects":["role:doctor"],
			"resources":["things/+/data/temperature"],"actions":["read"],
			"constraints":[{"kind":"accuracy","field":"temperature","step":0.1}]}`))
		must(t, err)
		must(t, e.PutPolicy("an", p))
		sessions := &hooks.Sessions{}
		must(t, srv.AddHook(hooks.NewAuthenticator(hooks.AuthConfig{Engine: e, Credentials: creds, Sessions: sessions, Server: srv, Log: zerolog.Nop()}), nil))
		must(t, srv.AddHook(hooks.NewEnforcer(hooks.EnforcerConfig{Engine: e, Sessions: sessions, Server: srv, Log: zerolog.Nop()}), nil))
	} else {
		must(t, srv.AddHook(new(auth.AllowHook), nil))
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	must(t, srv.AddListener(hooks.CloseSafely(l, srv)))
	must(t, srv.Serve())
	t.Cleanup(func() { _ = srv.Close() })
	return l.Address()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCPUSecondsOfThisProcess(t *testing.T) {
	before, err := CPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel's own account (getrusage) says this process
	// used 300 ms of CPU: on a loaded machine 300 ms of wall time may be
	// far less CPU.
	x := 0
	for start := rusageSeconds(t); rusageSeconds(t)-start < 0.3; {
		for range 100000 {
			x++
		}
	}
	after, err := CPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 0.25 {
		t.Errorf("300 ms of CPU counted as %.2f s (%d)", after-before, x)
	}
	if _, err := CPUSeconds(-5); err == nil {
		t.Error("no error for a process that does not exist")
	}
}

func rusageSeconds(t *testing.T) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func TestReportCPUPerDelivered(t *testing.T) {
	mk := func(broker string, cpu float64) Result {
		return Result{Broker: broker, Scenario: FanIn, Tag: TagMax, Sent: 1000, Delivered: 1000, DeliveredPerSec: 500,
			CPUPerDelivered: cpu, Views: []string{"raw=1"}, OK: true}
	}
	out := Report([]Result{mk("veil", 30), mk("mochi", 20), mk("mosquitto", 10)}, "")
	for _, want := range []string{"broker CPU µs per delivered msg", "| 30.0 |", "| 0.67× |", "| 0.33× |", "mochi's CPU per delivered msg ÷ Veil's ≥ 0.9 | 0.667× | **missed**"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestInstructionsOfThisProcess(t *testing.T) {
	c, err := openInstructions(os.Getpid())
	if err != nil {
		t.Skipf("perf events unavailable here: %v", err) // CPU time is still measured
	}
	defer c.close()
	before, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := range 10_000_000 {
		x += i & 3
	}
	after, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	// At least one instruction per iteration, on whichever thread ran it.
	if after-before < 10_000_000 {
		t.Errorf("10M iterations counted as %d instructions (%d)", after-before, x)
	}
	if _, err := openInstructions(-5); err == nil {
		t.Error("no error for a process that does not exist")
	}
}

// A Go process starts threads while it runs (a thread blocked in a system
// call hands its work to a new one): their instructions count too.
func TestInstructionsOfThreadsStartedLater(t *testing.T) {
	c, err := openInstructions(os.Getpid())
	if err != nil {
		t.Skipf("perf events unavailable here: %v", err)
	}
	defer c.close()
	known := map[int]bool{}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		known[tid] = true
	}
	before, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	// Goroutines locked to their threads keep them: with more of them than
	// there were threads, some run on threads started after the counters.
	release := make(chan struct{})
	defer close(release)
	type work struct{ tid, x int }
	done := make(chan work, 1)
	var claimed atomic.Bool
	for range len(known) + 4 {
		go func() {
			runtime.LockOSThread()
			if tid := unix.Gettid(); !known[tid] && claimed.CompareAndSwap(false, true) {
				x := 0
				for i := range 50_000_000 {
					x += i & 3
				}
				done <- work{tid, x}
			}
			<-release
		}()
	}
	var w work
	select {
	case w = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no goroutine ran on a new thread")
	}
	tid, x := w.tid, w.x
	after, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 50_000_000 {
		t.Errorf("50M iterations on thread %d, started after the counters, counted as %d instructions (%d)", tid, after-before, x)
	}
}

// The targets say how far single rounds stray from the ratio of the
// medians: each round's Veil run is paired with the same round's mochi run.
func TestReportRoundSpread(t *testing.T) {
	mk := func(broker string, round int, perSec, cpu float64) Result {
		return Result{Broker: broker, Scenario: FanOut, Tag: TagMax, Round: round, Sent: 1000, Delivered: 1000,
			DeliveredPerSec: perSec, CPUPerDelivered: cpu, Views: []string{"raw=1"}, OK: true}
	}
	out := Report([]Result{
		mk("veil", 1, 900, 20), mk("mochi", 1, 1000, 18),
		mk("veil", 2, 700, 25), mk("mochi", 2, 1000, 20),
		mk("veil", 3, 1100, 15), mk("mochi", 3, 1000, 15),
		mk("veil", 4, 800, 10), // no mochi run in round 4: not paired
	}, "")
	for _, want := range []string{
		"fanout QoS 0 delivered msg/s ≥ 0.9 × mochi | 0.850× (per round: 0.70–1.10×) | **missed**",
		"mochi's CPU per delivered msg ÷ Veil's ≥ 0.9 | 1.029× (per round: 0.80–1.00×) | met",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// One round is no spread.
	out = Report([]Result{mk("veil", 1, 900, 20), mk("mochi", 1, 1000, 18)}, "")
	if strings.Contains(out, "per round") {
		t.Errorf("a spread from one round:\n%s", out)
	}
	// A ratio just under a target must not read as the target itself
	// (0.897 printed as "0.90×" next to "missed").
	out = Report([]Result{mk("veil", 1, 897, 20), mk("mochi", 1, 1000, 18)}, "")
	if want := "≥ 0.9 × mochi | 0.897× | **missed**"; !strings.Contains(out, want) {
		t.Errorf("report lacks %q:\n%s", want, out)
	}
}
