package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/internal/freeport"
)

var veilBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "veil-bin-")
	if err != nil {
		panic(err)
	}
	veilBin = filepath.Join(dir, "veil")
	if out, err := exec.Command("go", "build", "-o", veilBin, ".").CombinedOutput(); err != nil {
		panic(fmt.Sprintf("go build: %v\n%s", err, out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestBadFlagsAndConfigExitWithCode2(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "veil.yaml")
	if err := os.WriteFile(cfg, []byte("mqtt: 127.0.0.1:0\nno-such-key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badType := filepath.Join(t.TempDir(), "veil.yaml")
	if err := os.WriteFile(badType, []byte("max-packet-size: lots\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	benchOff := filepath.Join(t.TempDir(), "veil.yaml")
	if err := os.WriteFile(benchOff, []byte("bench-no-enforcement: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"serve", "--no-such-flag"}, nil, "unknown flag: --no-such-flag"},
		{"bad address", []string{"serve", "--mqtt", "nonsense"}, nil, `--mqtt "nonsense"`},
		{"bad log level", []string{"serve", "--log-level", "loud"}, nil, `--log-level "loud"`},
		{"tls half configured", []string{"serve", "--tls-cert", "c.pem"}, nil, "--tls-cert and --tls-key go together"},
		{"enforcement off by a config file", []string{"serve", "--config", benchOff}, nil, `unknown key "bench-no-enforcement"`},
		{"jwt without audience", []string{"serve", "--jwt-key", "k.pem", "--jwt-issuer", "https://id.example"}, nil, "--jwt-key needs --jwt-audience"},
		{"unknown config key", []string{"serve", "--config", cfg}, nil, `unknown key "no-such-key"`},
		{"bad config value", []string{"serve", "--config", badType}, nil, "max-packet-size"},
		{"bad env value", []string{"serve"}, []string{"VEIL_MAX_PACKET_SIZE=huge"}, "VEIL_MAX_PACKET_SIZE"},
		{"unknown command", []string{"serv"}, nil, "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(veilBin, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("exit = %v, want code 2; stderr: %s", err, stderr.String())
			}
			msg := strings.TrimSpace(stderr.String())
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tc.want) {
				t.Fatalf("stderr %q: want one line containing %q", msg, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(veilBin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "veil ") {
		t.Fatalf("veil version: %q %v", out, err)
	}
}

// freePort is a loopback address for veil serve to bind, outside the
// ports the kernel hands out for port 0 (which its embedded servers bind).
func freePort(t *testing.T) string {
	t.Helper()
	addr, err := freeport.LoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// startVeil runs `veil serve` with the example household and waits until it accepts MQTT.
func startVeil(t *testing.T, dataDir, mqttAddr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(veilBin, "serve", "--bootstrap", "../../examples/bootstrap.yaml", "--data-dir", dataDir,
		"--mqtt", mqttAddr, "--http", "", "--log-level", "warn")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("tcp", mqttAddr); err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("veil did not start: %s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func dialV5(t *testing.T, addr, clientID, user, pass string, clean bool, got chan<- string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			if got != nil {
				got <- string(pr.Packet.Payload)
			}
			return true, nil
		}}})
	expiry := uint32(600)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: clientID, Username: user, UsernameFlag: true, Password: []byte(pass),
		PasswordFlag: true, CleanStart: clean, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	return pc
}

// TestCleanShutdownKeepsState: SIGTERM stops veil with exit code 0; after a
// restart the retained state and a persistent session's queued QoS 1 message
// are there again, and still only for those allowed.
func TestCleanShutdownKeepsState(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	veil := startVeil(t, dir, addr)
	ctx := context.Background()

	// An subscribes with a persistent session, then goes away.
	an := dialV5(t, addr, "an-phone", "an", "an-secret", true, nil)
	if _, err := an.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/thermo-1/data/temperature", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	_ = an.Disconnect(&paho.Disconnect{})
	lock := dialV5(t, addr, "lock-1", "lock-1", "lock-1-secret", true, nil)
	if _, err := lock.Publish(ctx, &paho.Publish{Topic: "things/lock-1/state", QoS: 1, Retain: true, Payload: []byte(`{"locked":true}`)}); err != nil {
		t.Fatal(err)
	}
	thermo := dialV5(t, addr, "thermo-1", "thermo-1", "thermo-1-secret", true, nil)
	if _, err := thermo.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", QoS: 1, Payload: []byte(`{"temperature":20.5}`)}); err != nil {
		t.Fatal(err)
	}
	_ = lock.Disconnect(&paho.Disconnect{})
	_ = thermo.Disconnect(&paho.Disconnect{})

	if err := veil.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- veil.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("veil exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		_ = veil.Process.Kill()
		t.Fatal("veil did not stop within 20 s of SIGTERM")
	}

	veil = startVeil(t, dir, addr)
	t.Cleanup(func() { _ = veil.Process.Signal(syscall.SIGTERM); _ = veil.Wait() })
	got := make(chan string, 10)
	dialV5(t, addr, "an-phone", "an", "an-secret", false, got)
	select {
	case m := <-got:
		if m != `{"temperature":20.5}` {
			t.Fatalf("queued message after restart: %s", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the acknowledged QoS 1 message queued for An was lost over the restart")
	}
	owner := make(chan string, 10)
	o := dialV5(t, addr, "an-laptop", "an", "an-secret", true, owner)
	stranger := make(chan string, 10)
	s := dialV5(t, addr, "stranger-1", "stranger", "stranger-secret", true, stranger)
	for _, c := range []*paho.Client{o, s} {
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "things/+/state", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case m := <-owner:
		if m != `{"locked":true}` {
			t.Fatalf("retained state after restart: %s", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retained lock state lost over the restart")
	}
	select {
	case m := <-stranger:
		t.Fatalf("stranger got retained state after restart: %s", m)
	case <-time.After(500 * time.Millisecond):
	}
}
