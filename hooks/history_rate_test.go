package hooks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// memArchive is an archive in memory: the readings' times, oldest first.
type memArchive struct{ ts []time.Time }

func (a memArchive) History(_ context.Context, _, _ string, from, to time.Time, fn func(time.Time, []byte) bool) error {
	for i, t := range a.ts {
		if t.Before(from) || !t.Before(to) {
			continue
		}
		if !fn(t, []byte(fmt.Sprintf(`{"temperature":%d.37}`, 20+i))) {
			return nil
		}
	}
	return nil
}

// TestHistoryRateDoesNotRestartPerQuery: under a rate of one reading an
// hour, a doctor asking $history again and again, each time from just
// after the last reading it got, gets one reading of the hour, not all six
// (the rate was once kept per query, so each query released the next).
func TestHistoryRateDoesNotRestartPerQuery(t *testing.T) {
	e, creds := household(t)
	p, err := policies.ParsePolicy([]byte(`{"id":"doctor-hourly","priority":0,"effect":"allow","subjects":["role:doctor"],
		"resources":["things/thermo-1/data/temperature"],"actions":["read","history"],
		"constraints":[{"kind":"rate","seconds":3600}]}`))
	must(t, err)
	must(t, e.PutPolicy("an", p))
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	arch := memArchive{}
	for i := range 6 { // six readings within one hour
		arch.ts = append(arch.ts, t0.Add(time.Duration(i)*10*time.Minute))
	}
	var hist *hooks.History
	_, addr, _ := serve(t, e, creds, func(c *hooks.EnforcerConfig) {
		hist = hooks.NewHistory(hooks.HistoryConfig{Engine: e, Sessions: c.Sessions, Server: c.Server, Source: arch, Log: zerolog.Nop()})
		c.System = append(c.System, hist)
	})
	t.Cleanup(hist.Close)
	doctor := newAsker(t, addr, "doctor-h", "doctor")
	var got []string
	from := t0
	for range 6 {
		body := fmt.Sprintf(`{"from":%q,"to":%q}`, from.Format(time.RFC3339Nano), t0.Add(time.Hour).Format(time.RFC3339Nano))
		for _, p := range doctor.ask(body, "") {
			if !p.OK {
				t.Fatalf("refused: %s", p.Error)
			}
			for _, r := range p.Readings {
				got = append(got, r.TS)
			}
		}
		if n := len(got); n > 0 {
			last, err := time.Parse(time.RFC3339Nano, got[n-1])
			if err != nil {
				t.Fatalf("answer: %v", got)
			}
			from = last.Add(time.Nanosecond)
		}
	}
	if len(got) != 1 || got[0] != t0.Format(time.RFC3339Nano) {
		t.Fatalf("under a rate of one reading an hour the doctor obtained %v through $history, want the hour's first reading only", got)
	}
}
