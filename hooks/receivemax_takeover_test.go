package hooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// The tests of this file run paho.golang subscribers that set Receive
// Maximum in their CONNECT, and take their sessions over or resume them
// while things publish. They keep what each client sends and receives in an
// event log, printed when a test fails.

// rmLog is a test's event log (prints would change the timing).
type rmLog struct {
	mu    sync.Mutex
	start time.Time
	lines []string
}

func (l *rmLog) add(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%9.3fms ", float64(time.Since(l.start).Microseconds())/1000)+fmt.Sprintf(format, a...))
}

func newRMLog(t *testing.T) *rmLog {
	l := &rmLog{start: time.Now()}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Logf("event log:\n%s", strings.Join(l.lines, "\n"))
		}
	})
	return l
}

// sensors is a population of n sensors s-0, s-1, … of an's, whose
// temperatures the doctor reads rounded to 0.1, or nil (no enforcement).
func sensors(t *testing.T, n int, enforce bool) (*policies.Engine, *hooks.Credentials) {
	t.Helper()
	if !enforce {
		return nil, nil
	}
	e := policies.NewEngine(policies.Options{Secret: []byte("test")})
	must(t, e.PutUser(policies.User{Name: "an"}))
	must(t, e.PutUser(policies.User{Name: "doctor", Attributes: policies.Attributes{"role": "doctor"}}))
	creds := hooks.NewCredentials()
	secrets := map[string]string{"user:doctor": "doctor"}
	for i := range n {
		id := fmt.Sprintf("s-%d", i)
		must(t, e.PutThing(policies.Thing{ID: id, Owner: "an", Kind: "sensor", Streams: []string{"temperature"}}))
		secrets["thing:"+id] = id
	}
	for name, secret := range secrets {
		h, err := argon2id.CreateHash(secret, fastHash)
		must(t, err)
		creds.Set(name, h)
	}
	p, err := policies.ParsePolicy([]byte(`{"id":"doctor-temp","priority":1,"effect":"allow","subjects":["role:doctor"],
		"resources":["things/+/data/temperature"],"actions":["read"],
		"constraints":[{"kind":"accuracy","field":"temperature","step":0.1}]}`))
	must(t, err)
	must(t, e.PutPolicy("an", p))
	return e, creds
}

// reading is a message of the tests: publisher P's message I.
type reading struct {
	Temperature float64
	P, I        int
}

// rmSub is the doctor's session "doc-rm" on one connection, acknowledging
// only when told to.
type rmSub struct {
	name string
	pc   *paho.Client
	got  chan *paho.Publish
	ca   *paho.Connack
}

// dialRM connects the doctor's session "doc-rm" with Receive Maximum
// receiveMax (0: none set) and a session expiry of 600 s, acknowledging
// nothing until told to.
func dialRM(t *testing.T, addr, name string, cleanStart bool, receiveMax uint16, log *rmLog) *rmSub {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	s := &rmSub{name: name, got: make(chan *paho.Publish, 10000)}
	s.pc = paho.NewClient(paho.ClientConfig{Conn: conn, EnableManualAcknowledgment: true, SendAcksInterval: time.Millisecond,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			log.add("%s <- PUBLISH id %d dup %v %s", name, pr.Packet.PacketID, pr.Packet.Duplicate(), pr.Packet.Payload)
			s.got <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { log.add("%s <- DISCONNECT %#x", name, d.ReasonCode) },
		OnClientError:      func(err error) { log.add("%s: %v", name, err) },
	})
	expiry := uint32(600)
	cp := &paho.Connect{ClientID: "doc-rm", Username: "doctor", UsernameFlag: true, Password: []byte("doctor"), PasswordFlag: true,
		CleanStart: cleanStart, KeepAlive: 60, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	if receiveMax > 0 {
		cp.Properties.ReceiveMaximum = &receiveMax
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log.add("%s -> CONNECT clean start %v, receive maximum %d", name, cleanStart, receiveMax)
	// paho fails Connect on any packet before the CONNACK.
	s.ca, err = s.pc.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("%s: connect: %v", name, err)
	}
	log.add("%s <- CONNACK session present %v", name, s.ca.SessionPresent)
	t.Cleanup(func() { _ = s.pc.Disconnect(&paho.Disconnect{}) })
	return s
}

// next returns the next message, or nil after wait.
func (s *rmSub) next(t *testing.T, wait time.Duration, enforce bool) (*paho.Publish, reading) {
	t.Helper()
	select {
	case pk := <-s.got:
		var r reading
		if err := json.Unmarshal(pk.Payload, &r); err != nil {
			t.Fatalf("%s: payload %s: %v", s.name, pk.Payload, err)
		}
		if want := map[bool]float64{true: 21.4, false: 21.37}[enforce]; r.Temperature != want {
			t.Errorf("%s: publisher %d's message %d: temperature %v, want %v", s.name, r.P, r.I, r.Temperature, want)
		}
		return pk, r
	case <-time.After(wait):
		return nil, reading{}
	}
}

// publishReadings connects sensors s-0 … s-(n-1) and has each publish
// each readings at QoS 1 from a goroutine of its own, the first before of
// them at once, the rest once resume is closed. published counts them.
func publishReadings(t *testing.T, addr string, n, each, before int, resume <-chan struct{}, published *atomic.Int32, log *rmLog) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	for p := range n {
		id := fmt.Sprintf("s-%d", p)
		pub := dialCounting(t, addr, id, id, id, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if i == before {
					<-resume
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := pub.Publish(ctx, &paho.Publish{Topic: "things/" + id + "/data/temperature", QoS: 1,
					Payload: []byte(fmt.Sprintf(`{"temperature":21.37,"p":%d,"i":%d}`, p, i))})
				cancel()
				if err != nil {
					t.Errorf("%s: message %d: %v", id, i, err)
					return
				}
				log.add("%s published %d", id, i)
				published.Add(1)
			}
		}()
	}
	return &wg
}

// TestReceiveMaximumSessionTakeoverWhilePublishing: the doctor's session
// has a full Receive Maximum of QoS 1 readings unacknowledged, and more
// waiting, when a second connection takes it over (same client id, Clean
// Start 0) while four sensors publish. The second connection's Receive
// Maximum, not the first's, bounds what it has unacknowledged (with none
// set, everything comes without an acknowledgement); the readings the
// first got are resent with DUP; every reading of every sensor arrives
// once, in the sensor's order, each through the enforcer (rounded); with
// enforcement on and off.
func TestReceiveMaximumSessionTakeoverWhilePublishing(t *testing.T) {
	for _, tc := range []struct{ oldMax, newMax uint16 }{{3, 5}, {5, 3}, {3, 0}} {
		for _, enforce := range []bool{true, false} {
			t.Run(fmt.Sprintf("receive maximum %d then %d, enforcement %v", tc.oldMax, tc.newMax, enforce), func(t *testing.T) {
				testTakeoverWhilePublishing(t, tc.oldMax, tc.newMax, enforce)
			})
		}
	}
}

func testTakeoverWhilePublishing(t *testing.T, oldMax, newMax uint16, enforce bool) {
	const publishers, each, before = 4, 100, 5
	e, creds := sensors(t, publishers, enforce)
	_, addr, _ := serve(t, e, creds)
	log := newRMLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	old := dialRM(t, addr, "old", true, oldMax, log)
	if _, err := old.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/+/data/temperature", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	resume := make(chan struct{})
	var published atomic.Int32
	wg := publishReadings(t, addr, publishers, each, before, resume, &published, log)
	defer wg.Wait()
	var released bool
	defer func() {
		if !released {
			close(resume)
		}
	}()

	// The first connection gets its quota's worth, and nothing more.
	oldGot := map[[2]int]bool{}
	for len(oldGot) < int(oldMax) {
		pk, r := old.next(t, 5*time.Second, enforce)
		if pk == nil {
			t.Fatalf("old connection: %d of %d messages", len(oldGot), oldMax)
		}
		oldGot[[2]int{r.P, r.I}] = true
	}
	for published.Load() < publishers*before {
		time.Sleep(100 * time.Microsecond)
	}
	if pk, r := old.next(t, 20*time.Millisecond, enforce); pk != nil {
		t.Fatalf("old connection: publisher %d's message %d beyond Receive Maximum %d", r.P, r.I, oldMax)
	}

	// The takeover, at a random moment while the sensors go on.
	close(resume)
	released = true
	time.Sleep(time.Duration(rand.Intn(3000)) * time.Microsecond)
	cur := dialRM(t, addr, "new", false, newMax, log)
	if !cur.ca.SessionPresent {
		t.Fatal("the session was not taken over")
	}

	var unacked []*paho.Publish
	maxUnacked := 0
	next := make([]int, publishers)
	total := 0
	receive := func(wait time.Duration) bool {
		t.Helper()
		pk, r := cur.next(t, wait, enforce)
		if pk == nil {
			return false
		}
		if r.I != next[r.P] {
			t.Fatalf("new connection: publisher %d's message %d when %d was due", r.P, r.I, next[r.P])
		}
		if oldGot[[2]int{r.P, r.I}] != pk.Duplicate() {
			t.Errorf("new connection: publisher %d's message %d, DUP %v; the old connection had it: %v", r.P, r.I, pk.Duplicate(), oldGot[[2]int{r.P, r.I}])
		}
		next[r.P]++
		total++
		unacked = append(unacked, pk)
		maxUnacked = max(maxUnacked, len(unacked))
		if newMax > 0 && len(unacked) > int(newMax) {
			t.Fatalf("new connection: %d unacknowledged QoS 1 PUBLISH packets, Receive Maximum %d", len(unacked), newMax)
		}
		return true
	}
	ack := func() {
		must(t, cur.pc.Ack(unacked[0]))
		unacked = unacked[1:]
	}
	const want = publishers * each
	if newMax == 0 {
		for total < want {
			if !receive(5 * time.Second) {
				t.Fatalf("new connection, no Receive Maximum: stalled at %d of %d without acknowledging", total, want)
			}
		}
	} else {
		for total < int(newMax) {
			if !receive(5 * time.Second) {
				t.Fatalf("new connection: %d of %d messages before any acknowledgement", total, newMax)
			}
		}
		if receive(200 * time.Millisecond) {
			t.Fatal("unreachable")
		}
		rng := rand.New(rand.NewSource(time.Now().UnixNano()))
		for total < want {
			if len(unacked) == int(newMax) || len(unacked) > 0 && rng.Intn(2) == 0 {
				ack()
			}
			wait := 5 * time.Second
			if len(unacked) > 0 && len(unacked) < int(newMax) {
				wait = time.Duration(rng.Intn(2000)) * time.Microsecond
			}
			if !receive(wait) && wait == 5*time.Second {
				t.Fatalf("new connection: stalled at %d of %d", total, want)
			}
		}
	}
	if maxUnacked != int(newMax) && newMax > 0 || newMax == 0 && maxUnacked != want {
		t.Errorf("new connection: at most %d unacknowledged, Receive Maximum %d", maxUnacked, newMax)
	}
	for len(unacked) > 0 {
		ack()
	}
	if receive(100 * time.Millisecond) {
		t.Error("new connection: a message beyond the last of each sensor")
	}
}

// TestReceiveMaximumResumeWithMoreQueuedThanQuota: readings queued for the
// doctor's session while it was away, more than the Receive Maximum of the
// connection that resumes it: the resend stays within that connection's
// quota (not the previous connection's), and each acknowledgement then lets
// exactly one more go, in order, also those published meanwhile; with no
// Receive Maximum, all come at once.
func TestReceiveMaximumResumeWithMoreQueuedThanQuota(t *testing.T) {
	for _, newMax := range []uint16{2, 5, 0} {
		for _, enforce := range []bool{true, false} {
			t.Run(fmt.Sprintf("receive maximum 3 then %d, enforcement %v", newMax, enforce), func(t *testing.T) {
				const queued, during = 20, 20
				e, creds := sensors(t, 1, enforce)
				_, addr, _ := serve(t, e, creds)
				log := newRMLog(t)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				old := dialRM(t, addr, "old", true, 3, log)
				if _, err := old.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/+/data/temperature", QoS: 1}}}); err != nil {
					t.Fatal(err)
				}
				_ = old.pc.Disconnect(&paho.Disconnect{})
				time.Sleep(100 * time.Millisecond)

				resume := make(chan struct{})
				var published atomic.Int32
				wg := publishReadings(t, addr, 1, queued+during, queued, resume, &published, log)
				for published.Load() < queued {
					time.Sleep(100 * time.Microsecond)
				}
				close(resume)
				cur := dialRM(t, addr, "new", false, newMax, log)
				if !cur.ca.SessionPresent {
					t.Fatal("the session was not resumed")
				}
				var unacked []*paho.Publish
				next := 0
				receive := func(wait time.Duration) bool {
					t.Helper()
					pk, r := cur.next(t, wait, enforce)
					if pk == nil {
						return false
					}
					if r.I != next {
						t.Fatalf("message %d when %d was due", r.I, next)
					}
					next++
					unacked = append(unacked, pk)
					if newMax > 0 && len(unacked) > int(newMax) {
						t.Fatalf("%d unacknowledged QoS 1 PUBLISH packets, Receive Maximum %d", len(unacked), newMax)
					}
					return true
				}
				if newMax == 0 {
					for next < queued+during {
						if !receive(5 * time.Second) {
							t.Fatalf("no Receive Maximum: stalled at %d without acknowledging", next)
						}
					}
				} else {
					for next < int(newMax) {
						if !receive(5 * time.Second) {
							t.Fatalf("%d of %d messages before any acknowledgement", next, newMax)
						}
					}
					if receive(200 * time.Millisecond) {
						t.Fatal("unreachable")
					}
					for next < queued+during {
						must(t, cur.pc.Ack(unacked[0]))
						unacked = unacked[1:]
						if !receive(5 * time.Second) {
							t.Fatalf("stalled at %d", next)
						}
						if receive(time.Millisecond) {
							t.Fatal("unreachable")
						}
					}
				}
				wg.Wait()
				for _, pk := range unacked {
					must(t, cur.pc.Ack(pk))
				}
				if receive(100 * time.Millisecond) {
					t.Error("a message beyond the last")
				}
			})
		}
	}
}
