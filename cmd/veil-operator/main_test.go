package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veil-iot/veil/operators/agent"
)

func TestConfigAndFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "broker: mqtts://veil.local:8883\nserial: TH-10-0042\nfactory-secret: s\nsimulate: true\ninterval: 10s\n")
	plain := write("plain.yaml", "broker: mqtt://veil.local:1883\nserial: TH-10-0042\nfactory-secret: s\n")
	plainAllowed := write("plain-allowed.yaml", "broker: mqtt://veil.local:1883\ninsecure-plaintext: true\nserial: TH-10-0042\nfactory-secret: s\n")
	lock := write("lock.yaml", "serial: JL-1\nfactory-secret: s\nrelay-pin: GPIO22\nrelay-active-low: true\ndoor-pin: GPIO27\nrelock-after: 3s\n")
	unknown := write("unknown.yaml", "serial: X\nrelay-pin: GPIO17\n")
	badDur := write("baddur.yaml", "serial: X\nfactory-secret: s\ninterval: soon\n")
	enrolled := filepath.Join(dir, "creds.json")
	if err := agent.SaveCredentials(enrolled, agent.Credentials{Thing: "th-1", Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // empty: must succeed
		code    int
	}{
		{"config file", []string{"dht22", "--config", good, "--check", "--credentials", filepath.Join(dir, "none.json")}, nil, "", 0},
		{"smartlock keys", []string{"smartlock", "--config", lock, "--check", "--credentials", filepath.Join(dir, "none.json")}, nil, "", 0},
		{"a key of another operator", []string{"dht22", "--config", unknown, "--check"}, nil, `unknown key "relay-pin"`, 2},
		{"bad duration in the file", []string{"dht22", "--config", badDur, "--check"}, nil, "interval", 2},
		{"not enrolled, no factory credential", []string{"cpu", "--check", "--credentials", filepath.Join(dir, "none.json")}, nil, "--serial and --factory-secret", 2},
		{"enrolled: no factory credential needed", []string{"cpu", "--check", "--credentials", enrolled}, nil, "", 0},
		{"environment", []string{"cpu", "--check", "--credentials", filepath.Join(dir, "none.json")},
			map[string]string{"VEIL_OPERATOR_SERIAL": "PI-1", "VEIL_OPERATOR_FACTORY_SECRET": "s"}, "", 0},
		{"flag wins over the environment", []string{"cpu", "--check", "--credentials", enrolled, "--log-format", "console"},
			map[string]string{"VEIL_OPERATOR_LOG_FORMAT": "xml"}, "", 0},
		{"bad log format", []string{"cpu", "--check", "--credentials", enrolled, "--log-format", "xml"}, nil, "--log-format", 2},
		{"bad broker", []string{"cpu", "--check", "--credentials", enrolled, "--broker", "veil.local"}, nil, "--broker", 2},
		// Plain MQTT only to this machine, unless explicitly allowed:
		// elsewhere the factory secret and the thing's secret go out in clear.
		{"plaintext to a remote broker", []string{"cpu", "--check", "--credentials", enrolled, "--broker", "mqtt://veil.local:1883"}, nil, "--insecure-plaintext", 2},
		{"tcp to a remote address", []string{"cpu", "--check", "--credentials", enrolled, "--broker", "tcp://10.0.0.5:1883"}, nil, "--insecure-plaintext", 2},
		{"plaintext to a remote broker in the file", []string{"cpu", "--config", plain, "--check", "--credentials", enrolled}, nil, "--insecure-plaintext", 2},
		{"plaintext to loopback", []string{"cpu", "--check", "--credentials", enrolled, "--broker", "mqtt://127.0.0.1:1883"}, nil, "", 0},
		{"plaintext to localhost", []string{"cpu", "--check", "--credentials", enrolled, "--broker", "mqtt://localhost:1883"}, nil, "", 0},
		{"plaintext to ::1", []string{"cpu", "--check", "--credentials", enrolled, "--broker", "tcp://[::1]:1883"}, nil, "", 0},
		{"TLS to a remote broker", []string{"cpu", "--check", "--credentials", enrolled, "--broker", "mqtts://veil.local:8883"}, nil, "", 0},
		{"plaintext allowed by the flag", []string{"cpu", "--check", "--credentials", enrolled, "--broker", "mqtt://veil.local:1883", "--insecure-plaintext"}, nil, "", 0},
		{"plaintext allowed in the file", []string{"cpu", "--config", plainAllowed, "--check", "--credentials", enrolled}, nil, "", 0},
		{"plaintext allowed by the environment", []string{"cpu", "--check", "--credentials", enrolled, "--broker", "mqtt://veil.local:1883"},
			map[string]string{"VEIL_OPERATOR_INSECURE_PLAINTEXT": "true"}, "", 0},
		{"bad buffer", []string{"cpu", "--check", "--credentials", enrolled, "--buffer", "0"}, nil, "--buffer", 2},
		{"bad backoff", []string{"cpu", "--check", "--credentials", enrolled, "--backoff-min", "10s", "--backoff-max", "1s"}, nil, "--backoff", 2},
		{"unknown flag", []string{"cpu", "--frobnicate"}, nil, "unknown flag", 2},
		{"unknown operator", []string{"toaster"}, nil, "unknown command", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			root := newRoot()
			root.SetArgs(tt.args)
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			err := root.Execute()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
			}
			if got := exitCode(err); got != tt.code {
				t.Fatalf("exit code %d, want %d", got, tt.code)
			}
		})
	}
}

func TestExitCodeForRefusedEnrolment(t *testing.T) {
	err := errors.Join(errors.New("context"), &agent.RejectedError{Reason: "already enrolled"})
	if exitCode(err) != 3 {
		t.Fatalf("exit code %d, want 3", exitCode(err))
	}
}
