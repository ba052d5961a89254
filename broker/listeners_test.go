package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/broker"
)

// selfSigned writes a certificate and key for 127.0.0.1 and returns their paths and a pool trusting it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "veil-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// wsConn adapts a WebSocket to the net.Conn paho needs (binary frames).
// gorilla allows one concurrent writer; paho writes from several goroutines.
type wsConn struct {
	*websocket.Conn
	r  io.Reader
	mu sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(p), c.WriteMessage(websocket.BinaryMessage, p)
}

func (c *wsConn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// TestTLSAndWebSocketListeners starts a second broker with --mqtts and --ws
// and checks the same enforcement over both.
func TestTLSAndWebSocketListeners(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	cfg := broker.Defaults()
	cfg.MQTT, cfg.HTTP, cfg.MQTTS, cfg.WS = "", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLSCert, cfg.TLSKey = certFile, keyFile
	cfg.DataDir, cfg.Bootstrap, cfg.LogLevel = t.TempDir(), "testdata/e2e/household.yaml", "warn"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := broker.Start(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	connectOver := func(conn net.Conn, user, pass string) (*paho.Client, error) {
		pc := paho.NewClient(paho.ClientConfig{Conn: conn})
		// KeepAlive 0: paho's pinger writes a PINGREQ at once from another
		// goroutine, and over this test's WebSocket adapter (one frame per
		// Write, no writev) its bytes could interleave with a SUBSCRIBE's.
		_, err := pc.Connect(ctx, &paho.Connect{ClientID: user + "-x", Username: user, UsernameFlag: true,
			Password: []byte(pass), PasswordFlag: true, CleanStart: true, KeepAlive: 0})
		return pc, err
	}
	tlsDial := func() net.Conn {
		c, err := tls.Dial("tcp", b.Addr("mqtts"), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	wsDial := func() net.Conn {
		d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, Subprotocols: []string{"mqtt"}}
		c, resp, err := d.Dial("wss://"+b.Addr("ws"), http.Header{})
		if err != nil {
			t.Fatalf("websocket dial: %v (%v)", err, resp)
		}
		return &wsConn{Conn: c}
	}
	// A plain TCP client cannot talk MQTT to the TLS port. First, so that
	// the broker is long done with the connection when the test closes it:
	// mochi adds a connection to the WaitGroup its Close waits on from the
	// connection's own goroutine, which the race detector reports when the
	// two meet.
	if c, err := net.Dial("tcp", b.Addr("mqtts")); err == nil {
		_, err := connectOver(c, "an", "an-pass")
		c.Close()
		if err == nil {
			t.Fatal("plaintext MQTT accepted on the TLS listener")
		}
	}
	for name, dial := range map[string]func() net.Conn{"mqtts": tlsDial, "wss": wsDial} {
		t.Run(name, func(t *testing.T) {
			if _, err := connectOver(dial(), "an", "wrong"); err == nil {
				t.Fatal("wrong password accepted")
			}
			pc, err := connectOver(dial(), "stranger", "stranger-pass")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Disconnect(&paho.Disconnect{})
			sa, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/thermo-1/data/#"}}})
			if sa == nil || sa.Reasons[0] != 0x87 {
				t.Fatalf("stranger subscribe over %s: %v %v", name, sa, err)
			}
		})
	}
}

func TestMetadataStoreDownAtStartIsAClearError(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cfg := broker.Defaults()
	cfg.MQTT, cfg.HTTP, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
	cfg.MongoURI = "mongodb://veil:hunter2@" + addr + "/?serverSelectionTimeoutMS=500"
	_, err := broker.Start(context.Background(), cfg, zerolog.Nop())
	if err == nil {
		t.Fatal("started without a metadata store")
	}
	if !strings.Contains(err.Error(), "metadata store unavailable") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %q: want a clear message without the password", err)
	}
}

func TestHealthAndMetricsEndpoints(t *testing.T) {
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + veil.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	connect(t, "an", "an-pass", connOpts{})
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, "veil_clients_connected") || !strings.Contains(body, "veil_messages_received_total") {
		t.Fatalf("/metrics: %d, missing veil metrics", code)
	}
	for _, h := range []string{broker.PublishPathMetric, broker.EncodeMetric, broker.PublishSpanMetric} {
		if !strings.Contains(body, h+`_bucket{le="0.0002"}`) {
			t.Errorf("/metrics has no %s histogram with a 200 µs bucket", h)
		}
	}
}

// TestLatencyHistogramsRecordTraffic checks the broker wires its timing
// hooks: a doctor's 200 rounded deliveries show in all three histograms.
func TestLatencyHistogramsRecordTraffic(t *testing.T) {
	counts := func() map[string]int {
		resp, err := http.Get("http://" + veil.HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		out := map[string]int{}
		for _, name := range []string{broker.PublishPathMetric, broker.EncodeMetric, broker.PublishSpanMetric} {
			m := regexp.MustCompile(`(?m)^` + name + `_count (\d+)$`).FindStringSubmatch(string(body))
			if m == nil {
				t.Fatalf("/metrics has no %s_count", name)
			}
			out[name], _ = strconv.Atoi(m[1])
		}
		return out
	}
	doc := connect(t, "doctor", "doctor-pass", connOpts{})
	doc.mustSubscribe("", "things/thermo-1/data/temperature")
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	before := counts()
	const n = 200
	for i := range n {
		thermo.publish("things/thermo-1/data/temperature", fmt.Sprintf(`{"temperature":21.37,"seq":%d}`, i), false)
		if m := doc.next(); m.payload != fmt.Sprintf(`{"temperature":21.4,"seq":%d}`, i) {
			t.Fatalf("doctor got %s", m.payload)
		}
	}
	after := counts()
	// One in 8 of each is sampled: the doctor's encodes by its own count
	// (at least 24 of 200), publishes at random (none of 200: p ≈ 1e-11).
	if d := after[broker.EncodeMetric] - before[broker.EncodeMetric]; d < n/8-1 {
		t.Errorf("%d encodes timed for %d deliveries, want at least %d", d, n, n/8-1)
	}
	for _, name := range []string{broker.PublishPathMetric, broker.PublishSpanMetric} {
		if after[name] <= before[name] {
			t.Errorf("%s: no publish timed in %d", name, n)
		}
	}
}
