package flagsource

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestApplyPrecedenceAndErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("addr: from-file\nsize: 7\nlevel: file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("T_LEVEL", "env")
	t.Setenv("T_SIZE", "9")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	addr := fs.String("addr", "default", "")
	size := fs.Int("size", 1, "")
	level := fs.String("level", "default", "")
	if err := fs.Parse([]string{"--level", "flag"}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, "T_", file); err != nil {
		t.Fatal(err)
	}
	if *addr != "from-file" || *size != 9 || *level != "flag" {
		t.Fatalf("addr=%q size=%d level=%q: want file, env, flag", *addr, *size, *level)
	}

	for name, tc := range map[string]struct {
		file, env, want string
	}{
		"unknown key":     {file: "nope: 1\n", want: `unknown key "nope"`},
		"bad file value":  {file: "size: lots\n", want: "size"},
		"bad env value":   {env: "lots", want: "T_SIZE"},
		"unreadable file": {want: "--config"},
	} {
		t.Run(name, func(t *testing.T) {
			path := ""
			if name == "unreadable file" {
				path = filepath.Join(t.TempDir(), "missing.yaml")
			}
			if tc.file != "" {
				path = filepath.Join(t.TempDir(), "c.yaml")
				_ = os.WriteFile(path, []byte(tc.file), 0o600)
			}
			if tc.env != "" {
				t.Setenv("T_SIZE", tc.env)
			} else {
				t.Setenv("T_SIZE", "")
				os.Unsetenv("T_SIZE")
			}
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			fs.Int("size", 1, "")
			err := Apply(fs, "T_", path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %q", err, tc.want)
			}
		})
	}
}

// TestCommandLineOnly: a flag marked CommandLineOnly is not set by a
// variable, and a config key naming it is refused as unknown.
func TestCommandLineOnly(t *testing.T) {
	newFlags := func() (*pflag.FlagSet, *bool) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		off := fs.Bool("bench-no-enforcement", false, "")
		CommandLineOnly(fs, "bench-no-enforcement")
		return fs, off
	}
	t.Setenv("T_BENCH_NO_ENFORCEMENT", "true")
	fs, off := newFlags()
	if err := Apply(fs, "T_", ""); err != nil || *off {
		t.Fatalf("from the environment: set %v, err %v", *off, err)
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("bench-no-enforcement: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, off = newFlags()
	if err := Apply(fs, "T_", file); err == nil || !strings.Contains(err.Error(), `unknown key "bench-no-enforcement"`) || *off {
		t.Fatalf("from a config file: set %v, err %v", *off, err)
	}
	fs, off = newFlags()
	if err := fs.Parse([]string{"--bench-no-enforcement"}); err != nil || Apply(fs, "T_", "") != nil || !*off {
		t.Fatal("the command line does not set it")
	}
}
