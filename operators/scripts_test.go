package operators_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPiInstallIntoRoot runs scripts/pi-install.sh into a directory tree
// (--root: no user, no systemctl) and checks what it wrote.
func TestPiInstallIntoRoot(t *testing.T) {
	binDir, root := t.TempDir(), t.TempDir()
	if err := os.Link(bins.operator, filepath.Join(binDir, "veil-operator")); err != nil {
		copyFile(t, bins.operator, filepath.Join(binDir, "veil-operator"))
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command("../scripts/pi-install.sh", args...)
		cmd.Env = append(os.Environ(), "VEIL_OPERATOR_ARCH=amd64")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("smartlock", "--root", root, "--bin-dir", binDir, "--broker", "mqtts://veil.local:8883",
		"--serial", "JL-200-0001", "--factory-secret", `fa"ctory`, "--set", "relay-pin=GPIO17", "--set", "door-pin=GPIO27", "--set", "relock-after=5s")
	if err != nil {
		t.Fatalf("pi-install: %v\n%s", err, out)
	}
	conf := filepath.Join(root, "etc", "veil-operator", "smartlock.yaml")
	st, err := os.Stat(conf)
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("config %v mode %v, want 0640", err, st.Mode().Perm())
	}
	b, _ := os.ReadFile(conf)
	for _, want := range []string{`broker: "mqtts://veil.local:8883"`, `factory-secret: "fa\"ctory"`, `relay-pin: "GPIO17"`,
		`credentials: "/var/lib/veil-operator/smartlock.json"`, "simulate: false"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config lacks %s:\n%s", want, b)
		}
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc", "systemd", "system", "veil-operator@.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart=/usr/local/bin/veil-operator %i --config /etc/veil-operator/%i.yaml") ||
		strings.Contains(string(unit), "@GROUPS@") {
		t.Fatalf("unit: %v\n%s", err, unit)
	}
	if st, err := os.Stat(filepath.Join(root, "usr", "local", "bin", "veil-operator")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v", err)
	}
	// An existing config is kept; a bad --set is refused by the operator's own check.
	if out, err := run("smartlock", "--root", root, "--bin-dir", binDir, "--broker", "mqtt://other:1883"); err != nil || !strings.Contains(out, "keeping the existing") {
		t.Fatalf("re-run: %v\n%s", err, out)
	}
	if out, err := run("dht22", "--root", root, "--bin-dir", binDir, "--broker", "mqtts://veil.local:8883",
		"--serial", "TH-10-0042", "--factory-secret", "x", "--set", "relay-pin=GPIO17"); err == nil || !strings.Contains(out, `unknown key "relay-pin"`) {
		t.Fatalf("a dht22 with a relay pin was accepted: %v\n%s", err, out)
	}
	// Plain MQTT to another host: refused by the check unless the config allows it.
	if out, err := run("cpu", "--root", root, "--bin-dir", binDir, "--broker", "mqtt://veil.local:1883",
		"--serial", "PI-1", "--factory-secret", "x"); err == nil || !strings.Contains(out, "--insecure-plaintext") {
		t.Fatalf("plain MQTT to a remote broker was accepted: %v\n%s", err, out)
	}
	if out, err := run("cpu", "--root", root, "--bin-dir", binDir, "--broker", "mqtt://veil.local:1883", "--force-config",
		"--serial", "PI-1", "--factory-secret", "x", "--set", "insecure-plaintext=true"); err != nil {
		t.Fatalf("plain MQTT allowed by insecure-plaintext was refused: %v\n%s", err, out)
	}
	if out, err := run("toaster", "--root", root); err == nil || !strings.Contains(out, "unknown operator") {
		t.Fatalf("unknown operator: %v\n%s", err, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestLifecycleScripts runs start.sh, running.sh and stop.sh of the cpu
// operator without systemd: a simulated operator that keeps trying to
// enrol with an unreachable broker.
func TestLifecycleScripts(t *testing.T) {
	if _, err := exec.LookPath("systemctl"); err == nil {
		if _, err := os.Stat("/run/systemd/system"); err == nil {
			if out, _ := exec.Command("systemctl", "cat", "veil-operator@cpu.service").CombinedOutput(); !strings.Contains(string(out), "No files found") {
				t.Skip("a veil-operator@cpu unit is installed on this machine")
			}
		}
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens: the operator retries enrolment with backoff
	run := t.TempDir()
	conf := filepath.Join(run, "cpu.yaml")
	if err := os.WriteFile(conf, []byte("broker: mqtt://"+addr+"\nserial: PI-1\nfactory-secret: x\nsimulate: true\ncredentials: "+filepath.Join(run, "cpu.json")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := func(name string) (string, error) {
		cmd := exec.Command("./cpu/" + name)
		cmd.Env = append(os.Environ(), "VEIL_OPERATOR_BIN="+bins.operator, "VEIL_OPERATOR_CONFIG="+conf, "VEIL_OPERATOR_RUN="+run)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := script("running.sh"); err == nil || out != "false" {
		t.Fatalf("running.sh before start: %q, %v", out, err)
	}
	if out, err := script("start.sh"); err != nil {
		t.Fatalf("start.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = script("stop.sh") })
	if out, err := script("running.sh"); err != nil || out != "true" {
		t.Fatalf("running.sh after start: %q, %v", out, err)
	}
	if out, err := script("stop.sh"); err != nil {
		t.Fatalf("stop.sh: %v\n%s", err, out)
	}
	time.Sleep(100 * time.Millisecond)
	if out, err := script("running.sh"); err == nil || out != "false" {
		t.Fatalf("running.sh after stop: %q, %v", out, err)
	}
	log, _ := os.ReadFile(filepath.Join(run, "veil-operator-cpu.log"))
	if !strings.Contains(string(log), "enrolment failed") {
		t.Fatalf("the operator did not try to enrol:\n%s", log)
	}
}
