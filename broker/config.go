package broker

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rs/zerolog"
)

// Config is everything `veil serve` is told by flags, VEIL_… variables or
// the YAML config file.
type Config struct {
	MQTT        string `yaml:"mqtt"`         // TCP listener, e.g. 127.0.0.1:1883
	WS          string `yaml:"ws"`           // MQTT over WebSocket; empty = off
	MQTTS       string `yaml:"mqtts"`        // TLS listener; needs TLSCert and TLSKey
	HTTP        string `yaml:"http"`         // /healthz, /readyz, /metrics; empty = off
	TLSCert     string `yaml:"tls-cert"`     // PEM certificate file
	TLSKey      string `yaml:"tls-key"`      // PEM key file
	DataDir     string `yaml:"data-dir"`     // broker state, embedded FerretDB, keys
	MongoURI    string `yaml:"mongo-uri"`    // empty = embedded FerretDB
	Database    string `yaml:"database"`     // MongoDB database name
	Bootstrap   string `yaml:"bootstrap"`    // YAML file applied idempotently at start
	LogLevel    string `yaml:"log-level"`    // zerolog level
	TimeZone    string `yaml:"time-zone"`    // zone of env.* policy conditions
	JWTIssuer   string `yaml:"jwt-issuer"`   // accepted issuer of bearer tokens
	JWTAudience string `yaml:"jwt-audience"` // this broker, as the tokens' aud names it
	JWTKey      string `yaml:"jwt-key"`      // PEM public key or HMAC secret file; empty = no tokens

	MaxPacketSize uint32 `yaml:"max-packet-size"` // bytes; larger packets drop the connection
	// StateSync is how often changes of the broker state (sessions,
	// subscriptions, retained and in-flight messages) are committed to
	// DataDir, in one transaction; 0 commits each change before going on.
	StateSync time.Duration `yaml:"state-sync"`

	// Archive (InfluxDB); empty InfluxURL = archive off.
	InfluxURL    string `yaml:"influx-url"`
	InfluxOrg    string `yaml:"influx-org"`
	InfluxBucket string `yaml:"influx-bucket"` // InfluxDB 1.8: "db/rp"
	InfluxToken  string `yaml:"influx-token"`  // InfluxDB 1.8: "user:pass" or empty
	// InfluxSpoolBytes bounds the disk spool of readings InfluxDB has not
	// acknowledged yet (under DataDir); beyond it readings are counted, not kept.
	InfluxSpoolBytes int64 `yaml:"influx-spool-bytes"`

	// Control plane.
	InvitationTTL  time.Duration `yaml:"invitation-ttl"`  // how long an invitation stays pending
	AuditRetention time.Duration `yaml:"audit-retention"` // how long audit records are kept

	// NoEnforcement runs plain mochi with an allow-all hook: for the
	// broker benchmark's baseline only, never in production.
	NoEnforcement bool `yaml:"bench-no-enforcement"`
	// BenchPopulation ("policies:tuples", e.g. "100000:1000000") adds a
	// generated population to the policy engine after start, in memory
	// only (broker/benchpop.go): for the scale benchmark, never in production.
	BenchPopulation string `yaml:"bench-population"`

	// Clock overrides the wall clock (tests).
	Clock interface{ Now() time.Time } `yaml:"-"`
}

// Defaults returns the configuration `veil serve` starts from.
func Defaults() Config {
	return Config{
		MQTT: "127.0.0.1:1883", HTTP: "127.0.0.1:8080", DataDir: "./var", Database: "veil",
		LogLevel: "info", TimeZone: "UTC", MaxPacketSize: 256 << 10, StateSync: 100 * time.Millisecond,
		InfluxBucket: "veil", InfluxSpoolBytes: 1 << 30, InvitationTTL: 7 * 24 * time.Hour, AuditRetention: 90 * 24 * time.Hour,
	}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	for _, l := range []struct{ name, addr string }{{"mqtt", c.MQTT}, {"ws", c.WS}, {"mqtts", c.MQTTS}, {"http", c.HTTP}} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %v", l.name, l.addr, err))
		}
	}
	if c.MQTT == "" && c.WS == "" && c.MQTTS == "" {
		errs = append(errs, errors.New("no MQTT listener: set --mqtt, --ws or --mqtts"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.MQTTS != "" && c.TLSCert == "" {
		errs = append(errs, errors.New("--mqtts needs --tls-cert and --tls-key"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if c.Database == "" {
		errs = append(errs, errors.New("--database must not be empty"))
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		errs = append(errs, fmt.Errorf("--log-level %q: want trace, debug, info, warn, error", c.LogLevel))
	}
	if _, err := time.LoadLocation(c.TimeZone); err != nil {
		errs = append(errs, fmt.Errorf("--time-zone %q: %v", c.TimeZone, err))
	}
	if c.JWTKey != "" && c.JWTIssuer == "" {
		errs = append(errs, errors.New("--jwt-key needs --jwt-issuer"))
	}
	if c.JWTKey != "" && c.JWTAudience == "" {
		// An issuer that serves other applications too mints tokens
		// for them that would otherwise log in here (RFC 8725 §3.9).
		errs = append(errs, errors.New("--jwt-key needs --jwt-audience (the aud tokens for this broker carry)"))
	}
	if c.StateSync < 0 || c.StateSync > time.Minute {
		errs = append(errs, fmt.Errorf("--state-sync %s: want 0 (every change) up to 1m", c.StateSync))
	}
	if c.InvitationTTL <= 0 {
		errs = append(errs, fmt.Errorf("--invitation-ttl %s: must be positive", c.InvitationTTL))
	}
	if c.AuditRetention <= 0 {
		errs = append(errs, fmt.Errorf("--audit-retention %s: must be positive", c.AuditRetention))
	}
	if c.InfluxURL != "" && c.InfluxSpoolBytes < 1<<16 {
		errs = append(errs, fmt.Errorf("--influx-spool-bytes %d: must be at least 65536", c.InfluxSpoolBytes))
	}
	if c.MaxPacketSize < 1024 {
		errs = append(errs, fmt.Errorf("--max-packet-size %d: must be at least 1024", c.MaxPacketSize))
	}
	return errors.Join(errs...)
}
