package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// ctlCmd is the owners' MQTT client (issue 4, being built).
func ctlCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "ctl",
		Short:  "Manage your policies, things and relations over MQTT (not built yet)",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("veil ctl is not built yet") },
	}
}
