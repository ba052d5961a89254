package broker

import mqtt "github.com/mochi-mqtt/server/v2"

// addControlPlane wires the owners' control plane: $config, invitations,
// $enroll and the audit trail (issue 4).
func (b *Broker) addControlPlane(srv *mqtt.Server) error { return nil }

// closeControlPlane flushes pending audit records.
func (b *Broker) closeControlPlane() {}
