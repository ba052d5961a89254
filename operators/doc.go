// Package operators holds Veil's Raspberry Pi operator programs: one
// binary, veil-operator (cmd/veil-operator), with a subcommand per device.
// Shared machinery is in operators/agent; each device has its own package
// (dht22, ds18b20, gps, cpu, smartlock) with the hardware implementation and
// a simulated one side by side, and its lifecycle scripts. See README.md.
//
// This package itself only carries the end-to-end test, which runs the
// real binaries — veil serve and veil-operator --simulate — as processes.
package operators
