package hooks

import (
	"strings"
	"testing"
	"time"

	"github.com/veil-iot/veil/policies"
)

func TestHistoryRequestBody(t *testing.T) {
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339Nano, s); return t }
	for _, c := range []struct {
		body     string
		from, to time.Time
		limit    int
		err      string
	}{
		{body: ``, from: now.Add(-DefaultHistoryWindow), to: now, limit: DefaultHistoryLimit},
		{body: `{}`, from: now.Add(-DefaultHistoryWindow), to: now, limit: DefaultHistoryLimit},
		{body: `{"from":"2026-11-25T18:00:00Z","to":"2026-11-25T19:00:00.5+01:00","limit":10}`,
			from: at("2026-11-25T18:00:00Z"), to: at("2026-11-25T18:00:00.5Z"), limit: 10},
		{body: `{"to":"2026-11-24T00:00:00Z"}`, from: at("2026-11-23T00:00:00Z"), to: at("2026-11-24T00:00:00Z"), limit: DefaultHistoryLimit},
		{body: `{"limit":10000}`, from: now.Add(-DefaultHistoryWindow), to: now, limit: MaxHistoryLimit},
		{body: `{"limit":1e2}`, from: now.Add(-DefaultHistoryWindow), to: now, limit: 100},
		{body: `{"limit":-1}`, err: "limit: must be a whole number from 1 to 10000"},
		{body: `{"limit":"5"}`, err: "limit: want a number"},
		{body: `{"from":"2026-11-25"}`, err: `from: "2026-11-25" is not an RFC 3339 time`},
		{body: `{"from":"2026-11-25T21:00:00Z"}`, err: "to: must be after from"},
		{body: `{"until":"x"}`, err: `unknown key "until"`},
		{body: `null`, from: now.Add(-DefaultHistoryWindow), to: now, limit: DefaultHistoryLimit},
		{body: `"x"`, err: "request: want a JSON object"},
		{body: `{"from":`, err: "request: want a JSON object"},
	} {
		t.Run(c.body, func(t *testing.T) {
			var q query
			err := q.parseBody([]byte(c.body), now)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !q.from.Equal(c.from) || !q.to.Equal(c.to) || q.limit != c.limit {
				t.Fatalf("from %s to %s limit %d; want %s %s %d", q.from, q.to, q.limit, c.from, c.to, c.limit)
			}
		})
	}
}

func TestHistoryTopicsRule(t *testing.T) {
	p := policies.UserPrincipal("an")
	var h HistoryTopics
	for _, c := range []struct {
		topic                        string
		pub, sub, deliver            bool
		handledPub, handledSub, hDel bool
	}{
		{"$history/things/t/data/s", true, false, false, true, true, true},
		{"$history/#", true, false, false, true, true, true},
		{"$history", false, false, false, false, true, false},
		{"$config/users/an/policies/x", false, false, false, false, false, false},
	} {
		hp, ap := h.MayPublish(nil, p, c.topic)
		hs, as := h.MaySubscribe(nil, p, c.topic)
		hd, ad := h.MayDeliver(nil, p, c.topic)
		if hp != c.handledPub || ap != c.pub || hs != c.handledSub || as != c.sub || hd != c.hDel || ad != c.deliver {
			t.Errorf("%s: publish %v/%v subscribe %v/%v deliver %v/%v", c.topic, hp, ap, hs, as, hd, ad)
		}
	}
}
