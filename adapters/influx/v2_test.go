package influx_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/influx"
)

// No InfluxDB 2.x runs on the build machines (it needs Docker, or Rust to
// build). This test checks the 2.x code path at the HTTP level against a
// recorder answering like InfluxDB 2.7 does: the archive looks the bucket
// up, finds it missing, looks up the organisation, creates the bucket,
// then writes with the token to /api/v2/write?org=…&bucket=…. The real
// writes and Flux queries are covered against influxd 1.8 (same API).
func TestInfluxDB2CreatesBucketAndWritesWithToken(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	var created map[string]any
	var body string
	bucketExists := false
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if got := r.Header.Get("Authorization"); got != "Token s3cret" {
			t.Errorf("%s %s: Authorization %q", r.Method, r.URL.Path, got)
		}
		calls = append(calls, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "GET" && r.URL.Path == "/api/v2/buckets":
			if bucketExists {
				io.WriteString(w, `{"buckets":[{"id":"b1","name":"veil","orgID":"o1","retentionRules":[]}]}`)
				return
			}
			io.WriteString(w, `{"buckets":[]}`)
		case r.Method == "GET" && r.URL.Path == "/api/v2/orgs":
			io.WriteString(w, `{"orgs":[{"id":"o1","name":"acme"}]}`)
		case r.Method == "POST" && r.URL.Path == "/api/v2/buckets":
			json.NewDecoder(r.Body).Decode(&created)
			bucketExists = true
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"id":"b1","name":"veil","orgID":"o1","retentionRules":[]}`)
		case r.Method == "POST" && r.URL.Path == "/api/v2/write":
			b, _ := io.ReadAll(r.Body)
			body += string(b)
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	defer rec.Close()
	a, err := influx.Open(influx.Config{URL: rec.URL, Org: "acme", Bucket: "veil", Token: "s3cret",
		SpoolDir: filepath.Join(t.TempDir(), "spool"), FlushInterval: 10 * time.Millisecond,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	if err := a.Append(influx.Reading{Thing: "t1", Stream: "temperature", Owner: "an", Payload: []byte(`{"temperature":21.5}`),
		Received: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	drained(t, a)
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"GET /api/v2/buckets?name=veil&org=acme",
		"GET /api/v2/orgs?descending=false&offset=0&org=acme",
		"POST /api/v2/buckets?",
		"POST /api/v2/write?bucket=veil&org=acme&precision=ns",
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	if created["name"] != "veil" || created["orgID"] != "o1" {
		t.Fatalf("bucket created with %v", created)
	}
	if body != "temperature,thing=t1,owner=an temperature=21.5 1000000000\n" {
		t.Fatalf("written %q", body)
	}
}
