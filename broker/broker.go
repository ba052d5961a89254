// Package broker assembles Veil: the metadata store (MongoDB or embedded
// FerretDB), the policy engine loaded from it, the mochi-mqtt server with
// Veil's hooks and persistent storage, its listeners, and the HTTP endpoints.
package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/ferretdb"
	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// Broker is a running Veil.
type Broker struct {
	cfg Config
	log zerolog.Logger

	Engine      *policies.Engine
	Credentials *hooks.Credentials
	Sessions    *hooks.Sessions
	Metrics     *hooks.Metrics
	// Timing samples the time enforcement adds to deliveries (/metrics).
	Timing        *hooks.Timing
	timingMetrics []prometheus.Collector
	Live          *hooks.LiveValues
	MQTT          *mqtt.Server
	Store         *mongo.Store

	ferret    *ferretdb.Server
	enforcer  *hooks.Enforcer // the control plane attaches its topics and audit sink
	control   *controlPlane
	archive   *archive    // sensor archive and $history (archive.go)
	state     *stateStore // mochi's session state, written behind
	auth      *hooks.Authenticator
	stopDaily chan struct{} // ends the daily refresh of connected names' networks
	http      *http.Server
	httpAddr  string
	listeners map[string]listeners.Listener
	ready     atomic.Bool
}

// Start brings Veil up: it returns once every listener accepts
// connections, or with the first error (and everything started undone).
func Start(ctx context.Context, cfg Config, log zerolog.Logger) (b *Broker, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	nb := &Broker{cfg: cfg, log: log, listeners: map[string]listeners.Listener{}}
	defer func() {
		if err != nil {
			nb.Close() // undo what started; the named result is already nil
		}
	}()
	b = nb
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := b.openStore(ctx); err != nil {
		return nil, err
	}
	if err := b.loadEngine(ctx); err != nil {
		return nil, err
	}
	if err := b.startMQTT(); err != nil {
		return nil, err
	}
	if err := b.startHTTP(); err != nil {
		return nil, err
	}
	b.ready.Store(true)
	log.Info().Str("mqtt", b.Addr("mqtt")).Str("ws", b.Addr("ws")).Str("mqtts", b.Addr("mqtts")).
		Str("http", b.httpAddr).Bool("enforcement", !cfg.NoEnforcement).Msg("veil is serving")
	return b, nil
}

func (b *Broker) openStore(ctx context.Context) error {
	uri := b.cfg.MongoURI
	if uri == "" {
		start := time.Now()
		f, err := ferretdb.Start(ctx, b.cfg.DataDir, b.log)
		if err != nil {
			return fmt.Errorf("embedded FerretDB: %w", err)
		}
		b.ferret = f
		uri = f.URI()
		b.log.Info().Dur("took", time.Since(start)).Msg("embedded FerretDB started")
	}
	st, err := mongo.Open(ctx, uri, b.cfg.Database)
	if err != nil {
		return err
	}
	b.Store = st
	if b.cfg.Bootstrap != "" {
		bs, err := LoadBootstrap(b.cfg.Bootstrap)
		if err != nil {
			return err
		}
		sum, err := bs.Apply(ctx, st)
		if err != nil {
			return fmt.Errorf("bootstrap %s: %w", b.cfg.Bootstrap, err)
		}
		for _, c := range bs.Conflicts() {
			b.log.Warn().Str("file", b.cfg.Bootstrap).Str("conflict", c).Msg("bootstrap change not applied: the owners changed it too")
		}
		b.log.Info().Str("file", b.cfg.Bootstrap).Interface("applied", sum).Msg("bootstrap applied")
	}
	return nil
}

func (b *Broker) loadEngine(ctx context.Context) error {
	secret, err := b.dataDirKey("pseudonym.key")
	if err != nil {
		return err
	}
	loc, err := time.LoadLocation(b.cfg.TimeZone)
	if err != nil {
		return err
	}
	b.Live = hooks.NewLiveValues()
	b.Engine = policies.NewEngine(policies.Options{Clock: b.cfg.Clock, Location: loc, Context: b.Live, Secret: secret})
	snap, creds, err := b.Store.Load(ctx)
	if err != nil {
		return fmt.Errorf("loading metadata: %w", err)
	}
	if err := b.Engine.Load(snap); err != nil {
		return fmt.Errorf("loading metadata into the policy engine: %w", err)
	}
	b.Credentials = hooks.NewCredentials()
	b.Credentials.Load(creds)
	settleAfterLoad()
	b.log.Info().Int("users", len(snap.Users)).Int("things", len(snap.Things)).Int("relationships", len(snap.Relationships)).
		Int("policies", len(snap.Policies)).Msg("metadata loaded")
	return nil
}

// dataDirKey is a secret kept in the data dir, created at first start:
// pseudonym.key is behind pseudonymize constraints (pseudonyms stay stable
// across restarts), networks.key behind the digests of the networks names
// logged in from.
func (b *Broker) dataDirKey(file string) ([]byte, error) {
	path := filepath.Join(b.cfg.DataDir, file)
	key, err := os.ReadFile(path)
	if err == nil && len(key) >= 32 {
		return key, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, key, 0o600); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return key, nil
}

func (b *Broker) startMQTT() error {
	level, _ := zerolog.ParseLevel(b.cfg.LogLevel)
	min := slog.LevelError
	if level <= zerolog.DebugLevel {
		min = slog.LevelDebug
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = b.cfg.MaxPacketSize
	caps.MaximumSessionExpiryInterval = 7 * 24 * 3600
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		Logger:       slog.New(slogToZerolog{log: b.log.With().Str("component", "mochi").Logger(), min: min}),
	})
	b.MQTT = srv
	b.Sessions = &hooks.Sessions{}
	b.Metrics = hooks.NewMetrics()
	b.Timing, b.timingMetrics = newTiming()
	span, spanMetric := newPublishSpan()
	b.timingMetrics = append(b.timingMetrics, spanMetric)

	b.state = newStateStore(filepath.Join(b.cfg.DataDir, "mqtt.db"), b.cfg.StateSync)
	if b.cfg.Clock != nil {
		b.state.now = b.cfg.Clock.Now
	}
	b.state.server, b.state.maxExpiry = srv, srv.Options.Capabilities.MaximumSessionExpiryInterval
	// First of the OnPublish hooks, with enforcement on or off alike.
	if err := srv.AddHook(span, nil); err != nil {
		return err
	}
	var authn *hooks.Authenticator
	if b.cfg.NoEnforcement {
		b.log.Warn().Msg("enforcement is OFF (--bench-no-enforcement): every client may do anything; benchmark baseline only")
		if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
			return err
		}
	} else {
		jwtCfg, err := b.jwtConfig()
		if err != nil {
			return err
		}
		b.enforcer = hooks.NewEnforcer(hooks.EnforcerConfig{
			Engine: b.Engine, Sessions: b.Sessions, Server: srv, Clock: b.cfg.Clock, Live: b.Live,
			Log: b.log.With().Str("component", "enforcer").Logger(), Metrics: b.Metrics, Timing: b.Timing,
			State: b.state,
		})
		authn = hooks.NewAuthenticator(hooks.AuthConfig{
			Engine: b.Engine, Credentials: b.Credentials, Sessions: b.Sessions, Server: srv, JWT: jwtCfg,
			MayPublish: b.enforcer.MayPublish,
			Log:        b.log.With().Str("component", "auth").Logger(), Metrics: b.Metrics,
		})
		if err := srv.AddHook(authn, nil); err != nil {
			return err
		}
		if err := srv.AddHook(b.enforcer, nil); err != nil {
			return err
		}
	}
	// After the enforcer: its OnQosPublish tells the store the view of a
	// delivery (KeepView) before the store records the delivery with it.
	if err := srv.AddHook(b.state, nil); err != nil {
		return fmt.Errorf("broker state store: %w", err)
	}
	if authn != nil {
		key, err := b.dataDirKey("networks.key")
		if err != nil {
			return err
		}
		if err := authn.RememberNetworks(key, b.state); err != nil {
			return fmt.Errorf("broker state store: %w", err)
		}
		b.auth, b.stopDaily = authn, make(chan struct{})
		go func(stop <-chan struct{}) {
			t := time.NewTicker(24 * time.Hour)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					authn.RefreshNetworks()
				}
			}
		}(b.stopDaily)
	}

	if err := b.addArchive(srv); err != nil {
		return err
	}
	if !b.cfg.NoEnforcement {
		if err := b.addControlPlane(srv); err != nil {
			return err
		}
	}

	var tlsCfg *tls.Config
	if b.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(b.cfg.TLSCert, b.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	add := func(l listeners.Listener) error {
		if err := srv.AddListener(hooks.CloseSafely(l, srv)); err != nil {
			return fmt.Errorf("listener %s on %s: %w", l.ID(), l.Address(), err)
		}
		b.listeners[l.ID()] = l
		return nil
	}
	if b.cfg.MQTT != "" {
		if err := add(tcpListener("mqtt", b.cfg.MQTT, nil)); err != nil {
			return err
		}
	}
	if b.cfg.MQTTS != "" {
		if err := add(tcpListener("mqtts", b.cfg.MQTTS, tlsCfg)); err != nil {
			return err
		}
	}
	if b.cfg.WS != "" {
		addr, err := concretePort(b.cfg.WS)
		if err != nil {
			return fmt.Errorf("--ws %s: %w", b.cfg.WS, err)
		}
		if err := add(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: addr, TLSConfig: tlsCfg})); err != nil {
			return err
		}
	}
	return srv.Serve()
}

// concretePort replaces port 0 by a free port: mochi's WebSocket listener
// cannot report the port it was given by the kernel.
func concretePort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return addr, err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Addr is the bound address of a listener ("mqtt", "mqtts", "ws"), or "".
func (b *Broker) Addr(id string) string {
	if l, ok := b.listeners[id]; ok {
		return l.Address()
	}
	return ""
}

// settleAfterLoad collects the garbage of a bulk load at once. The
// snapshot read from the metadata store is as large as what the engine
// keeps and is garbage once loaded: collected now, before clients connect,
// its memory goes back to the system and the first minutes of traffic do
// not run inside collection cycles over it (with a large population those
// cycles cost seconds of CPU each).
func settleAfterLoad() { debug.FreeOSMemory() }

// HTTPAddr is the bound address of the HTTP endpoints, or "".
func (b *Broker) HTTPAddr() string { return b.httpAddr }

func (b *Broker) startHTTP() error {
	if b.cfg.HTTP == "" {
		return nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	reg.MustRegister(newCollector(b))
	reg.MustRegister(b.timingMetrics...)
	if b.archive != nil {
		reg.MustRegister(b.archive)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !b.ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := b.Store.Ping(ctx); err != nil {
			// Enforcement goes on with the loaded state; configuration changes cannot.
			http.Error(w, "metadata store unavailable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", b.cfg.HTTP)
	if err != nil {
		return fmt.Errorf("--http %s: %w", b.cfg.HTTP, err)
	}
	b.httpAddr = ln.Addr().String()
	b.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := b.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error().Err(err).Msg("http server")
		}
	}()
	return nil
}

// Close stops everything in reverse order: listeners and clients first (so
// nothing new is acknowledged), then the state store is flushed and closed,
// then the metadata store.
func (b *Broker) Close() {
	b.ready.Store(false)
	if b.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = b.http.Shutdown(ctx)
		cancel()
	}
	if b.auth != nil {
		// Before the state store closes: names connected until now keep
		// their networks across the restart.
		close(b.stopDaily)
		b.auth.RefreshNetworks()
		b.auth = nil
	}
	if b.MQTT != nil {
		_ = b.MQTT.Close()
	}
	b.closeArchive()
	b.closeControlPlane()
	if b.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = b.Store.Close(ctx)
		cancel()
	}
	if b.ferret != nil {
		if err := b.ferret.Close(); err != nil {
			b.log.Warn().Err(err).Msg("stopping embedded FerretDB")
		}
	}
	b.log.Info().Msg("veil stopped")
}
