package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/broker"
)

// TestCtl drives `veil ctl` against a real broker (embedded FerretDB, the
// e2e household): answers are printed, ok:false exits non-zero.
func TestCtl(t *testing.T) {
	cfg := broker.Defaults()
	cfg.MQTT, cfg.HTTP, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
	cfg.Bootstrap, cfg.LogLevel = "../../broker/testdata/e2e/household.yaml", "warn"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := broker.Start(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t.Setenv("VEIL_BROKER", "tcp://"+b.Addr("mqtt"))

	run := func(user, pass, stdin string, args ...string) (map[string]any, string, error) {
		t.Helper()
		t.Setenv("VEIL_USER", user)
		t.Setenv("VEIL_PASSWORD", pass)
		cmd := ctlCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetIn(strings.NewReader(stdin))
		cmd.SetArgs(args)
		err := cmd.Execute()
		var ans map[string]any
		_ = json.Unmarshal(out.Bytes(), &ans)
		return ans, out.String(), err
	}

	pol := `{"id":"ctl-p","priority":60,"effect":"allow","subjects":["user:ruth"],"resources":["things/thermo-1/data/temperature"],"actions":["read"]}`
	file := t.TempDir() + "/p.json"
	if err := os.WriteFile(file, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		user, pass string
		stdin      string
		args       []string
		wantErr    bool
		want       string
	}{
		{"apply from a file", "an", "an-pass", "", []string{"policy", "apply", "-f", file}, false, `"ok": true`},
		{"apply from stdin, invalid", "an", "an-pass", strings.Replace(pol, `"priority":60`, `"priority":"x"`, 1),
			[]string{"policy", "apply", "-f", "-"}, true, `priority: must be`},
		{"ls", "an", "an-pass", "", []string{"policy", "ls"}, false, `$config/users/an/policies/ctl-p`},
		{"thing show", "an", "an-pass", "", []string{"thing", "show", "lock-1"}, false, `"relation": "visitor"`},
		{"thing show, not yours", "stranger", "stranger-pass", "", []string{"thing", "show", "lock-1"}, true, ``},
		{"invite", "an", "an-pass", "", []string{"relation", "invite", "thermo-1", "ruth", "--as", "visitor",
			"--until", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, false, `"invitation"`},
		{"invite, stranger", "stranger", "stranger-pass", "", []string{"relation", "invite", "thermo-1", "ruth", "--as", "visitor"}, true, `not authorized`},
		{"invitation ls", "ruth", "ruth-pass", "", []string{"invitation", "ls"}, false, `"from": "an"`},
		{"decline unknown", "ruth", "ruth-pass", "", []string{"invitation", "decline", "nope"}, true, `not found`},
		{"audit", "an", "an-pass", "", []string{"audit", "--since", "2h"}, false, `"records"`},
		{"rm", "an", "an-pass", "", []string{"policy", "rm", "ctl-p"}, false, `"ok": true`},
		{"rm again", "an", "an-pass", "", []string{"policy", "rm", "ctl-p"}, true, `not found`},
		{"revoke", "an", "an-pass", "", []string{"relation", "revoke", "thermo-1", "ruth"}, false, `"ok": true`},
	}
	for _, tc := range tests {
		_, out, err := run(tc.user, tc.pass, tc.stdin, tc.args...)
		if (err != nil) != tc.wantErr || (tc.wantErr && err != nil && !errors.Is(err, errRefused)) {
			t.Fatalf("%s: err %v, want error %v\n%s", tc.name, err, tc.wantErr, out)
		}
		if !strings.Contains(out, tc.want) {
			t.Fatalf("%s: output lacks %q:\n%s", tc.name, tc.want, out)
		}
	}
	// Wrong password: a connection error, not a refusal.
	if _, _, err := run("an", "wrong", "", "policy", "ls"); err == nil || errors.Is(err, errRefused) {
		t.Fatalf("wrong password: %v", err)
	}
}
