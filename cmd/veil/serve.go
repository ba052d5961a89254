package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/veil-iot/veil/broker"
	"github.com/veil-iot/veil/cmd/internal/flagsource"
	"github.com/veil-iot/veil/cmd/internal/heapfloor"
)

func serveCmd() *cobra.Command {
	cfg := broker.Defaults()
	var configFile string
	var heapFloor uint64
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the broker",
		Long: `Run the broker. Every flag can also be set by the environment variable
VEIL_<FLAG> (upper case, '-' as '_', e.g. VEIL_MONGO_URI) or by a key of the
same name in the YAML file given by --config. Flags win over the environment,
which wins over the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flagsource.Apply(cmd.Flags(), "VEIL_", configFile); err != nil {
				return usageError{err}
			}
			if err := cfg.Validate(); err != nil {
				return usageError{fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))}
			}
			return serve(cfg, heapFloor)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML config file")
	f.StringVar(&cfg.MQTT, "mqtt", cfg.MQTT, "MQTT TCP listener address (empty: off)")
	f.StringVar(&cfg.WS, "ws", cfg.WS, "MQTT over WebSocket listener address (empty: off)")
	f.StringVar(&cfg.MQTTS, "mqtts", cfg.MQTTS, "MQTT over TLS listener address (needs --tls-cert, --tls-key)")
	f.StringVar(&cfg.HTTP, "http", cfg.HTTP, "HTTP address for /healthz, /readyz, /metrics (empty: off)")
	f.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "PEM certificate for --mqtts and --ws")
	f.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "PEM private key for --mqtts and --ws")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for broker state and the embedded metadata store")
	f.StringVar(&cfg.MongoURI, "mongo-uri", cfg.MongoURI, "MongoDB URI (empty: embedded FerretDB under --data-dir)")
	f.StringVar(&cfg.Database, "database", cfg.Database, "MongoDB database name")
	f.StringVar(&cfg.Bootstrap, "bootstrap", cfg.Bootstrap, "YAML file of users, things, places, relations and policies applied at start")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn, error")
	f.StringVar(&cfg.TimeZone, "time-zone", cfg.TimeZone, "time zone of env.* policy conditions")
	f.StringVar(&cfg.JWTIssuer, "jwt-issuer", cfg.JWTIssuer, "accepted issuer of JWT bearer tokens")
	f.StringVar(&cfg.JWTAudience, "jwt-audience", cfg.JWTAudience, "audience (aud) JWT bearer tokens must name: this broker")
	f.StringVar(&cfg.JWTKey, "jwt-key", cfg.JWTKey, "PEM public key or HMAC secret file verifying JWT bearer tokens")
	f.Uint32Var(&cfg.MaxPacketSize, "max-packet-size", cfg.MaxPacketSize, "largest MQTT packet accepted, in bytes")
	f.StringVar(&cfg.InfluxURL, "influx-url", cfg.InfluxURL, "InfluxDB URL for the sensor archive (empty: archive off)")
	f.StringVar(&cfg.InfluxOrg, "influx-org", cfg.InfluxOrg, "InfluxDB 2 organisation (empty for InfluxDB 1.8)")
	f.StringVar(&cfg.InfluxBucket, "influx-bucket", cfg.InfluxBucket, "InfluxDB bucket (InfluxDB 1.8: db/rp)")
	f.StringVar(&cfg.InfluxToken, "influx-token", cfg.InfluxToken, "InfluxDB token (InfluxDB 1.8: user:pass or empty)")
	f.Int64Var(&cfg.InfluxSpoolBytes, "influx-spool-bytes", cfg.InfluxSpoolBytes, "bound of the disk spool of readings InfluxDB has not acknowledged yet")
	f.DurationVar(&cfg.StateSync, "state-sync", cfg.StateSync, "commit broker state changes (sessions, retained and in-flight messages) to disk this often, in one transaction; 0 = each change on its own")
	f.DurationVar(&cfg.InvitationTTL, "invitation-ttl", cfg.InvitationTTL, "how long an invitation stays pending")
	f.DurationVar(&cfg.AuditRetention, "audit-retention", cfg.AuditRetention, "how long audit records are kept")
	f.Uint64Var(&heapFloor, "heap-floor-bytes", heapfloor.DefaultBytes(), "let the Go heap grow to this before collecting garbage (default: 64 MiB, or a sixteenth of the machine's memory if less; 0: Go's default; GOGC and GOMEMLIMIT still apply)")
	f.BoolVar(&cfg.NoEnforcement, "bench-no-enforcement", false, "benchmark baseline only: plain mochi, no authentication or authorisation")
	_ = f.MarkHidden("bench-no-enforcement")
	flagsource.CommandLineOnly(f, "bench-no-enforcement")
	f.StringVar(&cfg.BenchPopulation, "bench-population", "", "benchmark only: add a generated population policies:tuples (e.g. 100000:1000000) in memory")
	_ = f.MarkHidden("bench-population")
	flagsource.CommandLineOnly(f, "bench-population")
	return cmd
}

func serve(cfg broker.Config, heapFloor uint64) error {
	level, _ := zerolog.ParseLevel(cfg.LogLevel)
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
	defer heapfloor.Start(heapFloor).Stop()
	serveBenchPprof("VEIL_BENCH_PPROF")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := broker.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := b.LoadBenchPopulation(ctx); err != nil {
		b.Close()
		return err
	}
	<-ctx.Done()
	log.Info().Msg("shutting down")
	b.Close()
	return nil
}
