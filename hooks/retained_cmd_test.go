package hooks_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// Commands are never retained. mochi would replay a retained command at
// every later subscription of its thing, decided only on the thing's
// right to read its own commands: a visitor's retained unlock at every
// reconnect of the lock, long after her window closed. A PUBLISH with
// Retain on a command topic is refused as not authorized (PUBACK or
// PUBREC 0x87, nothing at QoS 0), by the owner too, by topic alias too,
// counted and audited as a denied command; the device gets it neither live
// nor on a later subscription, while a command not retained still reaches
// it.
func TestRetainedCommandRefused(t *testing.T) {
	for _, c := range []struct {
		name  string
		user  string // "an" owns thermo-1; the doctor may send it resets (mayReset)
		qos   byte
		alias bool // by a topic alias: registered by the refused publish, then used alone
	}{
		{"owner at QoS 0", "an", 0, false},
		{"owner at QoS 1", "an", 1, false},
		{"owner at QoS 2", "an", 2, false},
		{"doctor at QoS 0", "doctor", 0, false},
		{"doctor at QoS 1", "doctor", 1, false},
		{"doctor at QoS 2", "doctor", 2, false},
		{"doctor by alias at QoS 1", "doctor", 1, true},
		{"doctor by alias at QoS 2", "doctor", 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, creds := household(t)
			must(t, e.PutPolicy("an", mayReset))
			audit := new(commandAudit)
			metrics := hooks.NewMetrics()
			srv, addr, _ := serve(t, e, creds, func(cfg *hooks.EnforcerConfig) { cfg.Audit, cfg.Metrics = audit.record, metrics })
			dev := new(counter)
			subscribe(t, dialCounting(t, addr, "thermo-1", "thermo-1", "thermo-1", dev), "things/thermo-1/cmd/#")
			sender := dialCounting(t, addr, c.user+"-sender", c.user, c.user, nil)

			want := map[byte]byte{0: 0, 1: 0x87, 2: 0x87}[c.qos] // QoS 0 has no acknowledgement
			refused := int64(1)
			var alias *uint16
			if c.alias {
				alias = new(uint16)
				*alias = 1
			}
			if got := publishCode(t, sender, resetTopic, `{"retained":1}`, c.qos, true, alias); got != want {
				t.Fatalf("retained reset: reason 0x%02x, want 0x%02x", got, want)
			}
			if c.alias {
				refused++
				if got := publishCode(t, sender, "", `{"retained":2}`, c.qos, true, alias); got != want {
					t.Fatalf("retained reset by the alias alone: reason 0x%02x, want 0x%02x", got, want)
				}
			}
			// The same command not retained is delivered, after the refused
			// one(s) on the same connection: the device gets it alone.
			if got := publishCode(t, sender, resetTopic, `{"retained":false}`, 1, false, nil); got != 0 {
				t.Fatalf("reset not retained: reason 0x%02x, want 0", got)
			}
			waitAll(t, 1, []*counter{dev})
			time.Sleep(100 * time.Millisecond)
			if n, last := dev.n.Load(), dev.last.Load(); n != 1 || last != `{"retained":false}` {
				t.Fatalf("device got %d commands, the last %v; want the one not retained alone", n, last)
			}

			if pk, ok := srv.Topics.Retained.Get(resetTopic); ok {
				t.Fatalf("retained on %s: %s", resetTopic, pk.Payload)
			}
			// The device comes back and subscribes again: nothing is replayed.
			again := new(counter)
			subscribe(t, dialCounting(t, addr, "thermo-1", "thermo-1", "thermo-1", again), "things/thermo-1/cmd/#")
			time.Sleep(300 * time.Millisecond)
			if n := again.n.Load(); n != 0 {
				t.Fatalf("device got %d command(s) on its new subscription, the last %v", n, again.last.Load())
			}

			if n := metrics.Snapshot()["publish_denied"]; n != refused {
				t.Errorf("publish_denied = %d, want %d", n, refused)
			}
			denied, allowed := audit.counts(c.user)
			if denied != refused || allowed != 1 {
				t.Errorf("audited %d denied (%s) and %d allowed commands of %s, want %d and 1", denied, hooks.RetainedCommandRule, allowed, c.user, refused)
			}
		})
	}
}

// A CONNECT whose will would retain a command is refused (CONNACK 0x87),
// whoever may send the command; the same will not retained is accepted
// where its sender may send it.
func TestRetainedCommandWillRefused(t *testing.T) {
	e, creds := household(t)
	must(t, e.PutPolicy("an", mayReset))
	_, addr, _ := serve(t, e, creds)
	for _, c := range []struct {
		user   string
		retain bool
		want   byte
	}{
		{"an", true, 0x87},
		{"doctor", true, 0x87},
		{"stranger", true, 0x87},
		{"an", false, 0},
		{"doctor", false, 0},
		{"stranger", false, 0x87},
	} {
		will := &paho.WillMessage{Topic: resetTopic, Payload: []byte(`{"reset":true}`), QoS: 1, Retain: c.retain}
		if got := willConnack(t, addr, c.user, will); got != c.want {
			t.Errorf("%s with a will on %s (retain %v): CONNACK 0x%02x, want 0x%02x", c.user, resetTopic, c.retain, got, c.want)
		}
	}
}

// willConnack connects user with will and returns the CONNACK's reason code.
func willConnack(t *testing.T, addr, user string, will *paho.WillMessage) byte {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	defer conn.Close()
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := pc.Connect(ctx, &paho.Connect{ClientID: user + "-will", Username: user, UsernameFlag: true,
		Password: []byte(user), PasswordFlag: true, CleanStart: true, KeepAlive: 30, WillMessage: will})
	if ca == nil {
		t.Fatalf("%s: no CONNACK: %v", user, err)
	}
	if err == nil {
		_ = pc.Disconnect(&paho.Disconnect{})
	}
	return ca.ReasonCode
}

// publishCode publishes and returns the reason code of the PUBACK (QoS 1)
// or PUBREC (QoS 2); 0 at QoS 0. With alias, by that topic alias (topic ""
// uses it alone).
func publishCode(t *testing.T, pc *paho.Client, topic, payload string, qos byte, retain bool, alias *uint16) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p := &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)}
	if alias != nil {
		p.Properties = &paho.PublishProperties{TopicAlias: alias}
	}
	r, err := pc.Publish(ctx, p)
	if r != nil {
		return r.ReasonCode
	}
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return 0
}

// commandAudit records the audited command decisions.
type commandAudit struct {
	mu      sync.Mutex
	denied  map[string]int64 // by principal, denied as retained commands
	allowed map[string]int64
}

func (a *commandAudit) record(p policies.Principal, act policies.Action, _ string, d *policies.Decision, n int64) {
	if act != policies.ActCommand {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.denied == nil {
		a.denied, a.allowed = map[string]int64{}, map[string]int64{}
	}
	switch {
	case d.Allowed():
		a.allowed[p.ID] += n
	case d.Rule == hooks.RetainedCommandRule && d.Thing == "thermo-1" && d.Owner == "an":
		a.denied[p.ID] += n
	}
}

func (a *commandAudit) counts(who string) (denied, allowed int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.denied[who], a.allowed[who]
}
