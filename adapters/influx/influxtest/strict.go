package influxtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
)

// StrictProxy stands in front of a real influxd 1.8 and refuses writes as
// InfluxDB 2.x does. Both parse line protocol alike, but where 1.8 writes
// the lines that parse and reports the others (a partial write, 400),
// 2.x refuses the whole request when one line does not parse (400
// "unable to parse …", no count). The proxy writes each request to a
// scratch database first: if a line did not parse there, it answers as
// 2.x would and writes nothing; otherwise it forwards the request. All
// else (queries, /ping) goes through as it is.
type StrictProxy struct {
	*httptest.Server
	refused atomic.Int64
}

// scratchDB is where the proxy tries each write first.
const scratchDB = "influxtest_parse_check"

// NewStrictProxy starts a proxy to the influxd at upstream; Close stops it.
func NewStrictProxy(upstream string) (*StrictProxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	resp, err := http.PostForm(upstream+"/query", url.Values{"q": {"CREATE DATABASE " + scratchDB}})
	if err != nil {
		return nil, fmt.Errorf("influxtest: creating the scratch database: %w", err)
	}
	resp.Body.Close()
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &StrictProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v2/write" {
			rp.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		q := r.URL.Query()
		q.Set("bucket", scratchDB+"/")
		q.Del("org")
		check, err := http.Post(upstream+"/api/v2/write?"+q.Encode(), "text/plain; charset=utf-8", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		msg, _ := io.ReadAll(check.Body)
		check.Body.Close()
		var e struct{ Error string }
		_ = json.Unmarshal(msg, &e)
		if i := strings.Index(e.Error, "unable to parse"); i >= 0 {
			p.refused.Add(1)
			// 2.x's answer: the parse error, no partial write, no count.
			reason := strings.TrimSuffix(e.Error[i:], " dropped=0")
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"code": "invalid", "message": reason})
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		rp.ServeHTTP(w, r)
	}))
	return p, nil
}

// Refused is how many write requests the proxy refused whole.
func (p *StrictProxy) Refused() int64 { return p.refused.Load() }
