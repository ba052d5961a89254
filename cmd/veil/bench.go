package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/veil-iot/veil/loadgen"
)

// benchCmd is the broker load generator (issue 7).
func benchCmd() *cobra.Command {
	cfg := loadgen.Config{Addr: "127.0.0.1:1883", Broker: "veil", Profile: loadgen.ProfileVeil, Scenario: loadgen.FanOut,
		Clients: 30, PayloadSize: 128, Duration: 5 * time.Second, Window: 1000}
	var (
		qos       int
		jsonOut   string
		passwords []string
		quiet     bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test an MQTT broker with the example household's clients",
		Long: `Load-test an MQTT v5 broker with the example household's identities
(examples/bootstrap.yaml plus things sensor-1…N with secret "sensor-N-secret").

Scenarios:
  fanout        thermo-1 publishes to N subscribers: a third the owner "an" (raw),
                a third the doctor (temperature rounded to 0.1), a third the
                stranger on things/+/data/# (nothing)
  fanin         N things sensor-1…N publish to one subscriber, the doctor on
                things/+/data/temperature (rounded)
  p2p           N pairs: sensor-i → one subscriber (owner raw, doctor rounded, alternating)
  idle          N idle connected clients; reports the broker's RSS per client (--broker-pid)
  policychange  fanout at full rate; half-way the owner denies the doctor through
                $config/users/an/policies/doctor-thermo; nothing published after the
                acknowledgement may reach a doctor (Veil only)

Every delivered payload is checked against what its subscriber is entitled to
under --profile (veil: as above; mochi: everybody raw; mosquitto: owner and
doctor raw, stranger nothing). A leaked or mis-rewritten message, a QoS 1 loss
or a stall fails the run (exit status 1), after the result is printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if qos < 0 || qos > 1 {
				return usageError{fmt.Errorf("--qos %d: want 0 or 1", qos)}
			}
			cfg.QoS = byte(qos)
			serveBenchPprof("VEIL_LOADGEN_PPROF")
			cfg.Passwords = loadgen.DefaultPasswords()
			for _, p := range passwords {
				user, pass, ok := strings.Cut(p, "=")
				if !ok || user == "" {
					return usageError{fmt.Errorf("--password %q: want user=password", p)}
				}
				cfg.Passwords[user] = pass
			}
			if err := cfg.Validate(); err != nil {
				return usageError{fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))}
			}
			if !quiet {
				cfg.Log = cmd.ErrOrStderr()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if !cmd.Flags().Changed("window") && cfg.QoS > 0 {
				cfg.Window = 100 // a QoS 1 broker that stores each in-flight message is slow: keep the queue short
			}
			res, err := loadgen.Run(ctx, cfg)
			if err != nil {
				// Recorded too, so a run that could not happen is seen in the report.
				failed := &loadgen.Result{Broker: cfg.Broker, Profile: cfg.Profile, Scenario: cfg.Scenario, QoS: cfg.QoS,
					Clients: cfg.Clients, PayloadSize: cfg.PayloadSize, RateTarget: cfg.Rate, Round: cfg.Round, Tag: cfg.Tag,
					FailureReason: err.Error()}
				if jsonOut != "" && jsonOut != "-" {
					_ = writeResult(io.Discard, failed, jsonOut)
				}
				return err
			}
			if err := writeResult(cmd.OutOrStdout(), res, jsonOut); err != nil {
				return err
			}
			if !res.OK {
				return fmt.Errorf("%s %s run failed: %s", res.Broker, res.Scenario, res.FailureReason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", cfg.Addr, "broker MQTT address host:port")
	f.StringVar(&cfg.Broker, "broker", cfg.Broker, "label of the broker in the result")
	f.StringVar(&cfg.Profile, "profile", cfg.Profile, "entitlements to check: veil, mochi (allow-all) or mosquitto (ACL, no rewriting)")
	f.StringVar(&cfg.Scenario, "scenario", cfg.Scenario, "fanout, fanin, p2p, idle or policychange")
	f.IntVar(&qos, "qos", 0, "QoS of publishes and subscriptions: 0 or 1")
	f.IntVar(&cfg.Clients, "clients", cfg.Clients, "fanout: subscribers; fanin: publishers; p2p: pairs; idle: clients")
	f.IntVar(&cfg.PayloadSize, "payload", cfg.PayloadSize, "payload size in bytes (the header alone is about 80)")
	f.Float64Var(&cfg.Rate, "rate", 0, "published msg/s over all publishers; 0 = as fast as the subscribers receive")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "publishing phase (idle: settling time before memory is read)")
	f.IntVar(&cfg.Window, "window", cfg.Window, "max rate: messages in flight before the publishers wait for the slowest entitled subscriber (QoS 1 default: 100)")
	f.StringVar(&cfg.MetricsURL, "metrics", "", "the /metrics URL of Veil (or Veil with --bench-no-enforcement): report the time enforcement added to deliveries and the publish span, from the broker's sampled histograms")
	f.IntVar(&cfg.BrokerPID, "broker-pid", 0, "pid of the broker process (on this machine) whose memory (idle) or CPU time per delivered message (other scenarios) is measured")
	f.StringVar(&jsonOut, "json", "", "append the result as one JSON line to this file ('-': stdout instead of the summary)")
	f.StringArrayVar(&passwords, "password", nil, "user=password overriding the example household's (repeatable)")
	f.IntVar(&cfg.Round, "round", 0, "round number recorded in the result")
	f.StringVar(&cfg.Tag, "tag", "", "tag recorded in the result (make bench: max, half, idle, population, change)")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr")
	cmd.AddCommand(benchReportCmd(), benchMedianCmd())
	return cmd
}

// writeResult prints the summary and/or the JSON line.
func writeResult(w io.Writer, res *loadgen.Result, jsonOut string) error {
	line, err := json.Marshal(res)
	if err != nil {
		return err
	}
	switch jsonOut {
	case "-":
		_, err = fmt.Fprintf(w, "%s\n", line)
		return err
	case "":
	default:
		f, err := os.OpenFile(jsonOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("--json: %w", err)
		}
		_, werr := fmt.Fprintf(f, "%s\n", line)
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	if res.Idle != nil {
		i := res.Idle
		_, err = fmt.Fprintf(w, "%s idle: %d/%d clients connected in %.1fs; broker RSS %.1f MiB at %d clients → %.1f MiB = %.0f bytes per client\n",
			res.Broker, i.Connected, i.Clients, i.ConnectSeconds, float64(i.RSSBeforeKiB)/1024, i.BaseClients, float64(i.RSSAfterKiB)/1024, i.BytesPerClient)
		return err
	}
	status := "ok"
	if !res.OK {
		status = "FAILED: " + res.FailureReason
	}
	_, err = fmt.Fprintf(w, "%s %s qos%d clients=%d payload=%dB views[%s]: sent %d (%.0f/s) delivered %d (%.0f/s) lost %d dup %d withheld %d violations %d; latency p50 %.0fµs p95 %.0fµs p99 %.0fµs max %.0fµs; %s\n",
		res.Broker, res.Scenario, res.QoS, res.Clients, res.PayloadSize, strings.Join(res.Views, " "), res.Sent, res.SentPerSec,
		res.Delivered, res.DeliveredPerSec, res.Lost, res.Duplicate, res.Withheld, res.Violations,
		res.Latency.P50, res.Latency.P95, res.Latency.P99, res.Latency.Max, status)
	if e := res.Enforcement; err == nil && e != nil {
		_, err = fmt.Fprintf(w, "enforcement time in the broker (bucket upper bounds): publish path p50 %.0fµs p99 %.0fµs (%d sampled), encode p50 %.0fµs p99 %.0fµs (%d sampled); added to a delivery p99 ≤ %.0fµs\n",
			e.PathP50, e.PathP99, e.PathSamples, e.EncodeP50, e.EncodeP99, e.EncodeSamples, e.AddedP99)
	}
	if p := res.PublishSpan; err == nil && p != nil {
		_, err = fmt.Fprintf(w, "publish span in the broker (bucket upper bounds): p50 %.0fµs p99 %.0fµs (%d sampled)\n", p.P50, p.P99, p.Samples)
	}
	if err == nil && res.PolicyChange != nil {
		c := res.PolicyChange
		_, err = fmt.Fprintf(w, "policy change on %s acknowledged after message %d (%.1f ms); last message to a doctor + 1 = %d; lag %d messages\n",
			c.Topic, c.AtSeq, c.AckMillis, c.AppliedFromSeq, c.Lag)
	}
	for _, v := range res.ViolationLog {
		fmt.Fprintf(w, "  violation: %s\n", v)
	}
	return err
}

func benchReportCmd() *cobra.Command {
	var in, doc, header string
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Summarise the JSON results of make bench into docs/benchmarks.md",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			results, err := loadgen.ReadResults(in)
			if err != nil {
				return err
			}
			if len(results) == 0 {
				return fmt.Errorf("no results in %s", in)
			}
			if header != "" {
				h, err := os.ReadFile(header)
				if err != nil {
					return err
				}
				header = string(h)
			}
			body := loadgen.Report(results, header)
			if doc == "" {
				_, err := io.WriteString(cmd.OutOrStdout(), body)
				return err
			}
			old, err := os.ReadFile(doc)
			if err != nil {
				return err
			}
			updated, err := loadgen.ReplaceSection(string(old), "<!-- broker-bench:begin -->", "<!-- broker-bench:end -->", body)
			if err != nil {
				return fmt.Errorf("%s: %w", doc, err)
			}
			return os.WriteFile(doc, []byte(updated), 0o644)
		},
	}
	cmd.Flags().StringVar(&in, "in", "var/bench", "directory of *.json result files")
	cmd.Flags().StringVar(&doc, "doc", "", "markdown file whose broker-bench section is replaced (empty: print)")
	cmd.Flags().StringVar(&header, "header", "", "markdown file put before the tables (method, notes)")
	return cmd
}

// benchMedianCmd prints the median of one field over matching results
// (scripts/bench.sh: half of plain mochi's maximum rate).
func benchMedianCmd() *cobra.Command {
	var in, broker, tag, scenario, field string
	var qos int
	cmd := &cobra.Command{
		Use:    "median",
		Short:  "Print the median sent or delivered msg/s of matching results",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			results, err := loadgen.ReadResults(in)
			if err != nil {
				return err
			}
			var xs []float64
			for _, r := range results {
				if r.Broker != broker || r.Tag != tag || r.Scenario != scenario || int(r.QoS) != qos || !r.OK {
					continue
				}
				switch field {
				case "sent_per_s":
					xs = append(xs, r.SentPerSec)
				case "delivered_per_s":
					xs = append(xs, r.DeliveredPerSec)
				default:
					return usageError{fmt.Errorf("--field %q: want sent_per_s or delivered_per_s", field)}
				}
			}
			if len(xs) == 0 {
				return fmt.Errorf("no successful %s %s qos%d runs tagged %s in %s", broker, scenario, qos, tag, in)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%.0f\n", loadgen.Median(xs))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "var/bench", "directory of *.json result files")
	f.StringVar(&broker, "broker", "mochi", "broker label")
	f.StringVar(&tag, "tag", loadgen.TagMax, "tag")
	f.StringVar(&scenario, "scenario", loadgen.FanOut, "scenario")
	f.IntVar(&qos, "qos", 0, "QoS")
	f.StringVar(&field, "field", "sent_per_s", "sent_per_s or delivered_per_s")
	return cmd
}
