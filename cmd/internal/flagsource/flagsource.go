// Package flagsource fills command-line flags from the environment and a
// YAML file, so that every flag of Veil's binaries can be set three ways:
// the command line wins over the environment, which wins over the file.
package flagsource

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Apply sets every flag not given on the command line from the variable
// prefix+NAME (upper case, '-' as '_'), or failing that from the key of the
// same name in the YAML file (if file is not empty). A key that names no
// flag, or a value a flag refuses, is an error naming it. A flag marked
// CommandLineOnly is neither: a key naming it is unknown.
func Apply(fs *pflag.FlagSet, prefix, file string) error {
	fileValues := map[string]any{}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		if err := yaml.Unmarshal(data, &fileValues); err != nil {
			return fmt.Errorf("--config %s: %w", file, err)
		}
		for k := range fileValues {
			if fl := fs.Lookup(k); k == "config" || fl == nil || commandLineOnly(fl) {
				return fmt.Errorf("--config %s: unknown key %q", file, k)
			}
		}
	}
	var errs []string
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || fl.Name == "config" || commandLineOnly(fl) {
			return
		}
		env := prefix + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(fl.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", env, err))
			}
			return
		}
		if v, ok := fileValues[fl.Name]; ok {
			if err := fs.Set(fl.Name, fmt.Sprint(v)); err != nil {
				errs = append(errs, fmt.Sprintf("--config %s: %s: %v", file, fl.Name, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

const onlyOnCommandLine = "flagsource-command-line-only"

// CommandLineOnly marks flag name as set on the command line only, never
// from the environment or the config file: for benchmark baselines such as
// --bench-no-enforcement, which switches all authentication off, and which
// a variable left in an environment or a key in a config file must not
// turn on.
func CommandLineOnly(fs *pflag.FlagSet, name string) {
	_ = fs.SetAnnotation(name, onlyOnCommandLine, []string{"true"})
}

func commandLineOnly(fl *pflag.Flag) bool { return len(fl.Annotations[onlyOnCommandLine]) > 0 }
