package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/influx/influxtest"
	"github.com/veil-iot/veil/broker"
)

// The archive tests share one influxd (started on first use, killed with
// the test process) and one archiving broker; tests that stop InfluxDB or
// the broker start their own.
var (
	sharedInfluxOnce sync.Once
	sharedInflux     *influxtest.Server
	sharedInfluxErr  error

	archiveVeilOnce sync.Once
	archiveVeil     *broker.Broker
	archiveVeilErr  error
)

// influxd returns the shared influxd, starting it on first use.
func influxd(t testing.TB) *influxtest.Server {
	t.Helper()
	sharedInfluxOnce.Do(func() {
		// The parallel fault tests need a second influxd and the veil
		// binary: start both now, while the sequential tests run.
		go func() {
			dir, err := testTempDir("outage-influxd")
			if err != nil {
				outageInflux <- outageStart{err: err}
				return
			}
			srv, err := influxtest.Start(dir)
			outageInflux <- outageStart{srv, dir, err}
		}()
		go prebuildVeil()
		dir, err := testTempDir("influxd")
		if err != nil {
			sharedInfluxErr = err
			return
		}
		sharedInflux, sharedInfluxErr = influxtest.Start(dir)
	})
	if sharedInfluxErr != nil {
		t.Fatal(sharedInfluxErr)
	}
	return sharedInflux
}

// testTempDir makes a directory that outlives single tests (the existing
// TestMain is not ours to extend): named after this process, and swept by
// the next run once this process is gone.
func testTempDir(what string) (string, error) {
	sweepOnce.Do(func() {
		old, _ := filepath.Glob(filepath.Join(os.TempDir(), "veil-archive-test-*"))
		for _, d := range old {
			rest := strings.TrimPrefix(filepath.Base(d), "veil-archive-test-")
			pid, err := strconv.Atoi(rest[:max(0, strings.IndexByte(rest, '-'))])
			if err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
				os.RemoveAll(d)
			}
		}
	})
	return os.MkdirTemp("", fmt.Sprintf("veil-archive-test-%d-%s-", os.Getpid(), what))
}

var sweepOnce sync.Once

type outageStart struct {
	srv *influxtest.Server
	dir string
	err error
}

// outageInflux delivers the outage test's own influxd, started early.
var outageInflux = make(chan outageStart, 1)

// outageInfluxd returns an influxd the caller may stop and restart.
func outageInfluxd(t *testing.T) *influxtest.Server {
	t.Helper()
	influxd(t) // starts it, if no test did yet
	o := <-outageInflux
	if o.err != nil {
		t.Fatal(o.err)
	}
	t.Cleanup(func() {
		o.srv.Stop()
		os.RemoveAll(o.dir)
	})
	return o.srv
}

// archiveConfig is a broker on free ports with the archive household and
// the archive pointed at url.
func archiveConfig(t testing.TB, url, bucket string) broker.Config {
	cfg := broker.Defaults()
	cfg.MQTT, cfg.HTTP, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Bootstrap = "testdata/archive/household.yaml"
	cfg.LogLevel = "warn"
	cfg.InfluxURL, cfg.InfluxBucket = url, bucket
	return cfg
}

func startBroker(t testing.TB, cfg broker.Config, log zerolog.Logger) *broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := broker.Start(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// archiving returns the shared archiving broker (its data dir lives as
// long as the process: it outlives the first test that asked for it).
func archiving(t testing.TB) *broker.Broker {
	t.Helper()
	srv := influxd(t)
	archiveVeilOnce.Do(func() {
		dir, err := testTempDir("broker")
		if err != nil {
			archiveVeilErr = err
			return
		}
		cfg := broker.Defaults()
		cfg.MQTT, cfg.HTTP, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
		cfg.Bootstrap = "testdata/archive/household.yaml"
		cfg.LogLevel = "warn"
		cfg.InfluxURL, cfg.InfluxBucket = srv.URL, "veil_e2e"
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		archiveVeil, archiveVeilErr = broker.Start(ctx, cfg, zerolog.New(os.Stderr).Level(zerolog.WarnLevel))
	})
	if archiveVeilErr != nil {
		t.Fatal(archiveVeilErr)
	}
	return archiveVeil
}

// mqttClient is a v5 client of a given broker address.
type mqttClient struct {
	*paho.Client
	t    testing.TB
	id   string
	msgs chan *paho.Publish
}

func dialAt(t testing.TB, addr, user, password, clientID, purpose string) *mqttClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &mqttClient{t: t, id: clientID, msgs: make(chan *paho.Publish, 20000)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
	})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true, Username: user, UsernameFlag: true,
		Password: []byte(password), PasswordFlag: true, Properties: &paho.ConnectProperties{}}
	if purpose != "" {
		cp.Properties.User = paho.UserProperties{{Key: "purpose", Value: purpose}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ca, err := c.Connect(ctx, cp); err != nil {
		conn.Close()
		t.Fatalf("connect %s: %v (%+v)", user, err, ca)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func (c *mqttClient) sub(filter, purpose string) {
	c.t.Helper()
	s := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}
	if purpose != "" {
		s.Properties = &paho.SubscribeProperties{User: paho.UserProperties{{Key: "purpose", Value: purpose}}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, s)
	if err != nil {
		c.t.Fatalf("subscribe %s: %v", filter, err)
	}
	if sa.Reasons[0] > 2 {
		c.t.Fatalf("subscribe %s refused: 0x%02x", filter, sa.Reasons[0])
	}
}

func (c *mqttClient) pub(topic, payload string, qos byte) byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if err != nil && r == nil {
		c.t.Fatalf("publish %s: %v", topic, err)
	}
	if r != nil {
		return r.ReasonCode
	}
	return 0
}

// historyReply is one message of a history answer.
type historyReply struct {
	Topic    string `json:"topic"`
	OK       bool   `json:"ok"`
	Error    string `json:"error"`
	Page     int    `json:"page"`
	More     bool   `json:"more"`
	Next     string `json:"next"`
	Readings []struct {
		TS   string          `json:"ts"`
		Data json.RawMessage `json:"data"`
	} `json:"readings"`
}

var correlation int

// history sends a request and collects the answer's pages (until one has
// more=false or is an error). The client must be subscribed to its reply topic.
func (c *mqttClient) history(topic, body, purpose, responseTopic string) []historyReply {
	c.t.Helper()
	correlation++
	corr := []byte("c-" + strconv.Itoa(correlation))
	if responseTopic == "" {
		responseTopic = "$config/replies/" + c.id + "/history"
	}
	p := &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(body),
		Properties: &paho.PublishProperties{ResponseTopic: responseTopic, CorrelationData: corr}}
	if purpose != "" {
		p.Properties.User = paho.UserProperties{{Key: "purpose", Value: purpose}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r, err := c.Publish(ctx, p); err != nil {
		c.t.Fatalf("history request %s: %v (%+v)", topic, err, r)
	}
	var out []historyReply
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-c.msgs:
			if m.Properties == nil || string(m.Properties.CorrelationData) != string(corr) {
				continue // a live delivery or an older answer
			}
			var r historyReply
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				c.t.Fatalf("history reply %s: %v", m.Payload, err)
			}
			out = append(out, r)
			if !r.OK || !r.More {
				return out
			}
		case <-deadline:
			c.t.Fatalf("history %s: no complete answer within 20 s (got %d pages)", topic, len(out))
		}
	}
}

// fluxCount counts the stored values of one field of a thing's stream.
func fluxCount(t testing.TB, url, bucket, stream, thing, field string) int64 {
	t.Helper()
	cl := influxdb2.NewClient(url, "")
	defer cl.Close()
	q := fmt.Sprintf(`from(bucket: %q) |> range(start: -1h, stop: 1h)
		|> filter(fn: (r) => r._measurement == %q and r.thing == %q and r._field == %q)
		|> group() |> count()`, bucket, stream, thing, field)
	res, err := cl.QueryAPI("").Query(context.Background(), q)
	if err != nil {
		t.Fatalf("flux count: %v", err)
	}
	defer res.Close()
	var n int64
	for res.Next() {
		n += res.Record().Value().(int64)
	}
	if res.Err() != nil {
		t.Fatalf("flux count: %v", res.Err())
	}
	return n
}

// fluxSeqs returns the stored "seq" values of a thing's stream.
func fluxSeqs(t testing.TB, url, bucket, stream, thing string) map[int]bool {
	t.Helper()
	cl := influxdb2.NewClient(url, "")
	defer cl.Close()
	q := fmt.Sprintf(`from(bucket: %q) |> range(start: -1h, stop: 1h)
		|> filter(fn: (r) => r._measurement == %q and r.thing == %q and r._field == "seq")`, bucket, stream, thing)
	res, err := cl.QueryAPI("").Query(context.Background(), q)
	if err != nil {
		t.Fatalf("flux: %v", err)
	}
	defer res.Close()
	seen := map[int]bool{}
	for res.Next() {
		seen[int(res.Record().Value().(float64))] = true
	}
	if res.Err() != nil {
		t.Fatalf("flux: %v", res.Err())
	}
	return seen
}

func tempDir(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(t.TempDir(), name)
}

type pahoSubscribe struct{ filter string }

func (s pahoSubscribe) packet() *paho.Subscribe {
	return &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: s.filter, QoS: 1}}}
}
