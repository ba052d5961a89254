// Command veil-operator runs a Raspberry Pi device as a Veil thing: it
// enrols with its factory credential on first start, then publishes its
// readings (or obeys commands) with its own credentials.
//
//	veil-operator dht22 --config /etc/veil-operator/dht22.yaml
//	veil-operator smartlock --simulate --broker mqtt://127.0.0.1:1883 --serial JL-200-0001 --factory-secret …
//	veil-operator cpu --broker mqtts://veil.example:8883 --ca-file ca.pem …
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/veil-iot/veil/cmd/internal/flagsource"
	"github.com/veil-iot/veil/operators/agent"
	"github.com/veil-iot/veil/operators/cpu"
	"github.com/veil-iot/veil/operators/dht22"
	"github.com/veil-iot/veil/operators/ds18b20"
	"github.com/veil-iot/veil/operators/gps"
	"github.com/veil-iot/veil/operators/smartlock"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

// usageError marks bad flags or configuration: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "veil-operator:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode: 2 bad usage or configuration, 3 enrolment refused (restarting
// will not help), 1 anything else.
func exitCode(err error) int {
	var ue usageError
	var rej *agent.RejectedError
	switch {
	case errors.As(err, &ue) || strings.Contains(err.Error(), "unknown "):
		return 2
	case errors.As(err, &rej):
		return 3
	}
	return 1
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "veil-operator",
		Short: "Veil operators: Raspberry Pi sensors and actuators as Veil things",
		Long: `Every subcommand runs one device. Flags can also be given as keys of the YAML
file named by --config (key = flag name) or as VEIL_OPERATOR_<FLAG> variables
(upper case, '-' as '_'); flags win over the environment, which wins over the file.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(dht22Cmd(), ds18b20Cmd(), gpsCmd(), cpuCmd(), smartlockCmd(), &cobra.Command{
		Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "veil-operator", version) },
	})
	return root
}

// common are the flags every operator has.
type common struct {
	name          string
	config        string
	broker        string
	insecurePlain bool
	caFile        string
	serial        string
	factorySecret string
	credentials   string
	simulate      bool
	interval      time.Duration
	buffer        int
	backoffMin    time.Duration
	backoffMax    time.Duration
	logLevel      string
	logFormat     string
	check         bool
}

func (c *common) register(f *pflag.FlagSet, defInterval time.Duration) {
	f.StringVar(&c.config, "config", "", "YAML config file (keys are flag names)")
	f.StringVar(&c.broker, "broker", "mqtt://127.0.0.1:1883", "broker URL: mqtts://host:port (TLS; also tls://, ssl://), or mqtt://host:port on this machine")
	f.BoolVar(&c.insecurePlain, "insecure-plaintext", false, "allow mqtt:// or tcp:// to a broker that is not on this machine: the factory secret, the thing's secret and its commands travel unencrypted (a trusted test network only)")
	f.StringVar(&c.caFile, "ca-file", "", "PEM CA certificates for a tls:// broker (default: system roots)")
	f.StringVar(&c.serial, "serial", "", "factory serial number (enrolment)")
	f.StringVar(&c.factorySecret, "factory-secret", "", "factory secret (enrolment; keep it in the 0600 config file, not on the command line)")
	f.StringVar(&c.credentials, "credentials", "", "where the enrolled thing id and secret are kept, mode 0600 (default ./veil-operator-<name>.json)")
	f.BoolVar(&c.simulate, "simulate", false, "simulate the hardware (realistic readings; a simulated lock and door)")
	f.DurationVar(&c.interval, "interval", defInterval, "time between readings")
	f.IntVar(&c.buffer, "buffer", 10000, "messages kept while the broker is unreachable (oldest dropped beyond)")
	f.DurationVar(&c.backoffMin, "backoff-min", time.Second, "first reconnect delay")
	f.DurationVar(&c.backoffMax, "backoff-max", time.Minute, "longest reconnect delay")
	f.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&c.logFormat, "log-format", "json", "log format: json or console")
	f.BoolVar(&c.check, "check", false, "check the configuration and exit")
}

// prepare applies the environment and the config file, checks the flags and
// returns the logger and agent options.
func (c *common) prepare(cmd *cobra.Command) (zerolog.Logger, agent.Options, error) {
	var log zerolog.Logger
	if err := flagsource.Apply(cmd.Flags(), "VEIL_OPERATOR_", c.config); err != nil {
		return log, agent.Options{}, usageError{err}
	}
	level, err := zerolog.ParseLevel(c.logLevel)
	if err != nil || c.logLevel == "" {
		return log, agent.Options{}, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)}
	}
	switch c.logFormat {
	case "json":
		log = zerolog.New(os.Stderr)
	case "console":
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly})
	default:
		return log, agent.Options{}, usageError{fmt.Errorf("--log-format %q: want json or console", c.logFormat)}
	}
	log = log.Level(level).With().Timestamp().Str("operator", c.name).Logger()
	u, err := url.Parse(c.broker)
	if err != nil || u.Host == "" {
		return log, agent.Options{}, usageError{fmt.Errorf("--broker %q: want mqtts://host:port (or mqtt://host:port on this machine)", c.broker)}
	}
	// Refused here (exit 2, not restarted), not only when Run dials: the
	// factory secret must never go out in clear by default.
	if _, err := agent.CheckBroker(u, c.insecurePlain); err != nil {
		return log, agent.Options{}, usageError{fmt.Errorf("--broker: %w (in the config file: insecure-plaintext: true; in the environment: VEIL_OPERATOR_INSECURE_PLAINTEXT=true)", err)}
	}
	var tlsCfg *tls.Config
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return log, agent.Options{}, usageError{fmt.Errorf("--ca-file: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return log, agent.Options{}, usageError{fmt.Errorf("--ca-file %s: no PEM certificates", c.caFile)}
		}
		tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if c.interval <= 0 {
		return log, agent.Options{}, usageError{fmt.Errorf("--interval %s: must be positive", c.interval)}
	}
	if c.buffer < 1 {
		return log, agent.Options{}, usageError{fmt.Errorf("--buffer %d: must be at least 1", c.buffer)}
	}
	if c.backoffMin <= 0 || c.backoffMax <= c.backoffMin {
		return log, agent.Options{}, usageError{fmt.Errorf("--backoff-min %s, --backoff-max %s: want 0 < min < max", c.backoffMin, c.backoffMax)}
	}
	creds := c.credentials
	if creds == "" {
		creds = "veil-operator-" + c.name + ".json"
	}
	if _, err := os.Stat(creds); err != nil && (c.serial == "" || c.factorySecret == "") {
		return log, agent.Options{}, usageError{fmt.Errorf("not enrolled yet (%s missing): --serial and --factory-secret are needed to enrol", creds)}
	}
	return log, agent.Options{
		Broker: u, TLS: tlsCfg, InsecurePlaintext: c.insecurePlain, Serial: c.serial, FactorySecret: c.factorySecret, CredentialsFile: creds,
		BufferSize: c.buffer, BackoffMin: c.backoffMin, BackoffMax: c.backoffMax, Log: log, Stdout: os.Stdout,
	}, nil
}

// run runs dev until SIGINT or SIGTERM.
func run(o agent.Options, dev agent.Device) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.Log.Info().Str("version", version).Msg("starting")
	err := agent.Run(ctx, o, dev)
	o.Log.Info().Msg("stopped")
	return err
}

func dht22Cmd() *cobra.Command {
	c := &common{name: "dht22"}
	var device string
	var attempts int
	cmd := &cobra.Command{
		Use:   "dht22",
		Short: "DHT22 temperature and humidity through the Linux IIO driver (dtoverlay=dht11,gpiopin=N)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, o, err := c.prepare(cmd)
			if err != nil || c.check {
				return err
			}
			var s dht22.Sensor = &dht22.Simulated{FailEvery: 7}
			if !c.simulate {
				if device == "" {
					if device, err = dht22.FindIIO(dht22.DefaultIIODir); err != nil {
						return err
					}
				}
				s = dht22.IIO{Dir: device}
			}
			return run(o, &dht22.Device{Sensor: s, Interval: c.interval, Attempts: attempts, Log: log})
		},
	}
	c.register(cmd.Flags(), 30*time.Second)
	cmd.Flags().StringVar(&device, "device", "", "IIO device directory (default: the dht11 device under /sys/bus/iio/devices)")
	cmd.Flags().IntVar(&attempts, "attempts", 5, "reads per reading before giving up on a transient error")
	return cmd
}

func ds18b20Cmd() *cobra.Command {
	c := &common{name: "ds18b20"}
	var w1Dir, probe string
	cmd := &cobra.Command{
		Use:   "ds18b20",
		Short: "DS18B20 temperature over 1-Wire (dtoverlay=w1-gpio,gpiopin=N)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, o, err := c.prepare(cmd)
			if err != nil || c.check {
				return err
			}
			var p ds18b20.Probe = &ds18b20.Simulated{}
			if !c.simulate {
				path, err := ds18b20.Find(w1Dir, probe)
				if err != nil {
					return err
				}
				p = ds18b20.Sysfs{Path: path}
			}
			return run(o, &ds18b20.Device{Probe: p, Interval: c.interval, Log: log})
		},
	}
	c.register(cmd.Flags(), 30*time.Second)
	cmd.Flags().StringVar(&w1Dir, "w1-dir", ds18b20.DefaultW1Dir, "1-Wire devices directory")
	cmd.Flags().StringVar(&probe, "probe", "", "probe id such as 28-3c01d6073f1a (default: the first 28-* device)")
	return cmd
}

func gpsCmd() *cobra.Command {
	c := &common{name: "gps"}
	var port string
	var baud int
	cmd := &cobra.Command{
		Use:   "gps",
		Short: "GNSS position from NMEA GGA/RMC sentences on a serial port (enable_uart=1)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, o, err := c.prepare(cmd)
			if err != nil || c.check {
				return err
			}
			var src gps.Source = &gps.Simulated{}
			if !c.simulate {
				src = gps.Serial{Port: port, Baud: baud}
			}
			return run(o, &gps.Device{Source: src, Interval: c.interval, Log: log})
		},
	}
	c.register(cmd.Flags(), 10*time.Second)
	cmd.Flags().StringVar(&port, "port", "/dev/serial0", "serial port of the receiver")
	cmd.Flags().IntVar(&baud, "baud", 9600, "baud rate")
	return cmd
}

func cpuCmd() *cobra.Command {
	c := &common{name: "cpu"}
	var thermal, loadavg string
	cmd := &cobra.Command{
		Use:   "cpu",
		Short: "the Pi's CPU temperature and load (monitoring)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, o, err := c.prepare(cmd)
			if err != nil || c.check {
				return err
			}
			var s cpu.Sampler = &cpu.Simulated{}
			if !c.simulate {
				s = cpu.System{Thermal: thermal, Loadavg: loadavg}
				if _, err := s.Sample(); err != nil {
					return err
				}
			}
			return run(o, &cpu.Device{Sampler: s, Interval: c.interval, Log: log})
		},
	}
	c.register(cmd.Flags(), time.Minute)
	cmd.Flags().StringVar(&thermal, "thermal", cpu.DefaultThermal, "thermal zone temperature file")
	cmd.Flags().StringVar(&loadavg, "loadavg", cpu.DefaultLoadavg, "load average file")
	return cmd
}

func smartlockCmd() *cobra.Command {
	c := &common{name: "smartlock"}
	var relayPin, doorPin string
	var activeLow, doorOpenHigh, simDoor bool
	var relockAfter, maxAge time.Duration
	cmd := &cobra.Command{
		Use:   "smartlock",
		Short: "the smartlock actuator: a relay on a GPIO line, an optional door contact, auto-relock",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, o, err := c.prepare(cmd)
			if err != nil || c.check {
				return err
			}
			if relockAfter <= 0 {
				return usageError{fmt.Errorf("--relock-after %s: must be positive", relockAfter)}
			}
			dev := &smartlock.Device{RelockAfter: relockAfter, MaxAge: maxAge, Log: log}
			if c.simulate {
				relay := &smartlock.SimRelay{}
				dev.Relay = relay
				if simDoor {
					door := &smartlock.SimDoor{}
					smartlock.SimulatePerson(relay, door, 1500*time.Millisecond, 3*time.Second)
					dev.Door = door
				}
			} else {
				relay, door, err := smartlock.OpenPins(relayPin, activeLow, doorPin, doorOpenHigh)
				if err != nil {
					return err
				}
				dev.Relay, dev.Door = relay, door
			}
			return run(o, dev)
		},
	}
	c.register(cmd.Flags(), time.Minute)
	f := cmd.Flags()
	f.StringVar(&relayPin, "relay-pin", "GPIO17", "GPIO line of the relay or strike driver")
	f.BoolVar(&activeLow, "relay-active-low", false, "the relay board switches on a low level")
	f.StringVar(&doorPin, "door-pin", "", "GPIO line of the door/reed contact (empty: none wired)")
	f.BoolVar(&doorOpenHigh, "door-open-high", true, "a high level on the door pin means open (reed to ground, pull-up)")
	f.BoolVar(&simDoor, "sim-door", true, "with --simulate: a simulated door contact and a person walking through after each unlock")
	f.DurationVar(&relockAfter, "relock-after", 5*time.Second, "relock this long after an unlock (sooner when the door closes again)")
	f.DurationVar(&maxAge, "max-command-age", time.Minute, "refuse commands whose ts is further than this from the lock's clock")
	_ = f.MarkHidden("interval") // the lock reports changes, not readings
	return cmd
}
