package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// benchCmd is the broker load generator (issue 7, being built).
func benchCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "bench",
		Short:  "Load-test a broker (not built yet)",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("veil bench is not built yet") },
	}
}
