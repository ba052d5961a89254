package broker_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/broker"
)

// TestClaimGuessesSentAtOnceAreCounted: wrong claims sent at once, from
// many connections of one installer, are limited as claims one after
// another: 5 per installer, the others refused unchecked. (A broker of
// its own: the limit it uses up would hold up other tests' installer.)
func TestClaimGuessesSentAtOnceAreCounted(t *testing.T) {
	cfg := broker.Defaults()
	cfg.MQTT, cfg.HTTP, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Bootstrap = "testdata/e2e/household.yaml"
	cfg.LogLevel = "warn"
	b := startBroker(t, cfg, zerolog.Nop())
	t.Cleanup(b.Close)
	addr := b.Addr("mqtt")
	const n = 12
	clients := make([]*cfgClient, n)
	for i := range clients {
		clients[i] = mustCfg(t, addr, "quentin", "quentin-pass")
	}
	answers := make([]string, n)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = c.ask(fmt.Sprintf("$config/things/made-up-%d/claim", i), `{"code":"AAAA-AAAA"}`).Error
		}()
	}
	wg.Wait()
	compared := 0
	for _, a := range answers {
		if strings.Contains(a, "claim refused") {
			compared++
		}
	}
	if compared > 5 {
		t.Errorf("%d of %d wrong claim codes sent at once were compared (limit 5 per installer): %q", compared, n, answers)
	}
}
