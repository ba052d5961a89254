package hooks_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/hooks"
)

// slowArchive answers a history query only once released, as InfluxDB
// does a long range or a query queued behind others.
type slowArchive struct {
	started, release chan struct{}
}

func (a *slowArchive) History(ctx context.Context, _, _ string, _, to time.Time, fn func(time.Time, []byte) bool) error {
	close(a.started)
	select {
	case <-a.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	fn(to.Add(-time.Minute), []byte(`{"temperature":21.37,"humidity":40.2}`))
	return nil
}

// TestHistoryAnswerGoesToTheRequesterOnly: a history answer is decided for
// its requester (an, the owner: raw values) and published when the archive
// has answered. If an has gone by then, and another user has connected
// under an's client id (free once an's clean session ended) and subscribed
// to "its" replies, that user gets nothing of an's answer.
func TestHistoryAnswerGoesToTheRequesterOnly(t *testing.T) {
	e, creds := household(t)
	archive := &slowArchive{started: make(chan struct{}), release: make(chan struct{})}
	srv, addr, _ := serve(t, e, creds, func(cfg *hooks.EnforcerConfig) {
		cfg.System = append(cfg.System, hooks.NewHistory(hooks.HistoryConfig{Engine: e, Sessions: cfg.Sessions,
			Server: cfg.Server, Source: archive}))
	})
	an := dialCounting(t, addr, "an-cli", "an", "an", nil)
	subscribe(t, an, "$config/replies/an-cli/#")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := an.Publish(ctx, &paho.Publish{Topic: "$history/things/thermo-1/data/temperature", QoS: 1,
		Payload: []byte(`{"limit":10}`), Properties: &paho.PublishProperties{ResponseTopic: "$config/replies/an-cli/history",
			CorrelationData: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-archive.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the history query did not start")
	}
	_ = an.Disconnect(&paho.Disconnect{})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, ok := srv.Clients.Get("an-cli"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an's client id was not freed")
		}
	}
	var got counter
	stranger := dialCounting(t, addr, "an-cli", "stranger", "stranger", &got)
	subscribe(t, stranger, "$config/replies/an-cli/#")
	close(archive.release)
	time.Sleep(500 * time.Millisecond)
	if got.n.Load() > 0 {
		t.Fatalf("the stranger received an's history answer: %v", got.last.Load())
	}
}
