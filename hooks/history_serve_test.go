package hooks_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// historyHousehold is household with a history policy for the doctor
// (temperatures rounded to 0.1, as live) and users who may each ask for
// thermo-1's history (password = name).
func historyHousehold(t *testing.T, users ...string) (*policies.Engine, *hooks.Credentials) {
	t.Helper()
	e, creds := household(t)
	p, err := policies.ParsePolicy([]byte(`{"id":"doctor-thermo-history","priority":2,"effect":"allow","subjects":["role:doctor"],
		"resources":["things/thermo-1/data/temperature"],"actions":["history"],
		"constraints":[{"kind":"accuracy","field":"temperature","step":0.1}]}`))
	must(t, err)
	must(t, e.PutPolicy("an", p))
	for _, u := range users {
		must(t, e.PutUser(policies.User{Name: u}))
		h, err := argon2id.CreateHash(u, fastHash)
		must(t, err)
		creds.Set("user:"+u, h)
		p, err := policies.ParsePolicy([]byte(`{"id":"history-` + u + `","priority":3,"effect":"allow","subjects":["user:` + u + `"],
			"resources":["things/thermo-1/data/temperature"],"actions":["history"]}`))
		must(t, err)
		must(t, e.PutPolicy("an", p))
	}
	return e, creds
}

// serveHistory serves e with a History on src (with configures it
// further) and returns the broker's address.
func serveHistory(t *testing.T, e *policies.Engine, creds *hooks.Credentials, src hooks.HistorySource, with ...func(*hooks.HistoryConfig)) string {
	t.Helper()
	var h *hooks.History
	_, addr, _ := serve(t, e, creds, func(c *hooks.EnforcerConfig) {
		hc := hooks.HistoryConfig{Engine: e, Sessions: c.Sessions, Server: c.Server, Source: src, Log: zerolog.Nop()}
		for _, w := range with {
			w(&hc)
		}
		h = hooks.NewHistory(hc)
		c.System = append(c.System, h)
	})
	t.Cleanup(h.Close) // before the server closes (registered after it)
	return addr
}

// historyPage is one message of a history answer.
type historyPage struct {
	OK       bool   `json:"ok"`
	Error    string `json:"error"`
	More     bool   `json:"more"`
	Readings []struct {
		TS   string          `json:"ts"`
		Data json.RawMessage `json:"data"`
	} `json:"readings"`
}

// asker is a v5 client sending history requests; it gathers each one's
// answer by its correlation data.
type asker struct {
	t     *testing.T
	pc    *paho.Client
	topic string // asked about; newAsker's: thermo-1's temperature
	mu    sync.Mutex
	n     int
	got   map[string][]historyPage
	end   map[string]chan struct{}
}

// newAsker connects user (password = name) as client id.
func newAsker(t *testing.T, addr, id, user string) *asker {
	t.Helper()
	a := &asker{t: t, topic: "things/thermo-1/data/temperature", got: map[string][]historyPage{}, end: map[string]chan struct{}{}}
	a.pc = dialCounting(t, addr, id, user, user, nil)
	a.pc.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		if pr.Packet.Properties == nil {
			return true, nil
		}
		var p historyPage
		_ = json.Unmarshal(pr.Packet.Payload, &p)
		corr := string(pr.Packet.Properties.CorrelationData)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.got[corr] = append(a.got[corr], p)
		if end := a.end[corr]; end != nil && (!p.OK || !p.More) {
			close(end)
			a.end[corr] = nil
		}
		return true, nil
	})
	subscribe(t, a.pc, "$config/replies/"+id+"/#")
	return a
}

// send publishes a request with purpose (if any) as a user property and
// returns its correlation data.
func (a *asker) send(body, purpose string) string {
	a.t.Helper()
	a.mu.Lock()
	a.n++
	corr := "c" + strconv.Itoa(a.n)
	a.end[corr] = make(chan struct{})
	a.mu.Unlock()
	p := &paho.Publish{Topic: "$history/" + a.topic, QoS: 1, Payload: []byte(body),
		Properties: &paho.PublishProperties{CorrelationData: []byte(corr)}}
	if purpose != "" {
		p.Properties.User = paho.UserProperties{{Key: "purpose", Value: purpose}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := a.pc.Publish(ctx, p)
	must(a.t, err)
	return corr
}

// answer waits for the whole answer to the request corr.
func (a *asker) answer(corr string) []historyPage {
	a.t.Helper()
	a.mu.Lock()
	end := a.end[corr]
	a.mu.Unlock()
	if end != nil {
		select {
		case <-end:
		case <-time.After(10 * time.Second):
			a.mu.Lock()
			for _, p := range a.got[corr] {
				a.t.Logf("got a page: ok %v, more %v, %d readings, error %q", p.OK, p.More, len(p.Readings), p.Error)
			}
			a.mu.Unlock()
			a.t.Fatalf("request %s: no complete answer within 10 s", corr)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.got[corr]
}

// ask sends a request and waits for its answer.
func (a *asker) ask(body, purpose string) []historyPage {
	a.t.Helper()
	return a.answer(a.send(body, purpose))
}
