// Command veil is the privacy-enforcing MQTT broker and its tools.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	_ "time/tzdata" // --time-zone works on minimal images without zoneinfo

	"github.com/spf13/cobra"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

// usageError marks bad flags or configuration: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	root := &cobra.Command{
		Use:           "veil",
		Short:         "Veil: an MQTT broker that enforces device owners' privacy on every message",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.DisableSuggestions = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(serveCmd(), versionCmd(), ctlCmd(), benchCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "veil:", err)
		var ue usageError
		if errors.As(err, &ue) || isCobraUsage(err) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// isCobraUsage recognises cobra's own argument errors (unknown command …).
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires "} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "veil", version)
		},
	}
}
