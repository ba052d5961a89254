package broker

import (
	"context"
	"fmt"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/veil-iot/veil/hooks"
)

// auditFlushInterval is how often the audit trail's minute aggregates are
// written to MongoDB and sent live to their owners.
const auditFlushInterval = 5 * time.Second

// housekeepingEvery is how often expired invitations are closed and the
// session records of clients mochi is done with are dropped.
const housekeepingEvery = time.Minute

// controlPlane is the owners' control plane: $config, invitations,
// $enroll and the audit trail (docs/control-plane.md).
type controlPlane struct {
	hook  *hooks.Control
	audit *hooks.Audit
	stop  chan struct{}
	done  chan struct{}
}

// addControlPlane wires the owners' control plane: $config, invitations,
// $enroll and the audit trail (issue 4).
func (b *Broker) addControlPlane(srv *mqtt.Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	factory, err := b.Store.FactoryHashes(ctx)
	if err != nil {
		return fmt.Errorf("loading the factory registry: %w", err)
	}
	for serial, hash := range factory {
		b.Credentials.Set(hooks.FactoryUserPrefix+serial, hash)
	}
	cp := &controlPlane{stop: make(chan struct{}), done: make(chan struct{})}
	cp.audit = hooks.NewAudit(hooks.AuditConfig{
		Store: b.Store, Clock: b.cfg.Clock, Retention: b.cfg.AuditRetention,
		Log:     b.log.With().Str("component", "audit").Logger(),
		Publish: func(owner string, payload []byte) { cp.hook.PublishAudit(owner, payload) },
	})
	cp.hook = hooks.NewControl(hooks.ControlConfig{
		Engine: b.Engine, Store: b.Store, Credentials: b.Credentials, Sessions: b.Sessions, Server: srv,
		Clock: b.cfg.Clock, Log: b.log.With().Str("component", "control").Logger(),
		InvitationTTL: b.cfg.InvitationTTL, Audit: cp.audit, HashParams: hashParams,
	})
	if err := srv.AddHook(cp.hook, nil); err != nil {
		return err
	}
	b.enforcer.Attach(cp.audit.Record, cp.hook)
	cp.audit.Start(auditFlushInterval)
	go func() {
		defer close(cp.done)
		t := time.NewTicker(housekeepingEvery)
		defer t.Stop()
		for {
			select {
			case <-cp.stop:
				return
			case <-t.C:
				cp.hook.ExpireInvitations()
				if n := b.Sessions.Sweep(srv); n > 0 {
					b.log.Debug().Int("dropped", n).Msg("session records of finished clients dropped")
				}
				b.enforcer.SweepFanouts(false)
			}
		}
	}()
	b.control = cp
	b.log.Info().Int("factory", len(factory)).Msg("control plane ready")
	return nil
}

// closeControlPlane flushes pending audit records.
func (b *Broker) closeControlPlane() {
	if b.control == nil {
		return
	}
	close(b.control.stop)
	<-b.control.done
	b.enforcer.SweepFanouts(true) // MQTT is closed: no fan-out is running
	b.control.audit.Close()
	b.control = nil
}

// AddFactoryDevice registers a device's factory credential for
// self-enrolment (stored argon2id-hashed), as the bootstrap file's
// factory section does.
func (b *Broker) AddFactoryDevice(ctx context.Context, serial, secret, model, vendor string) error {
	if b.control == nil {
		return fmt.Errorf("the control plane is off")
	}
	return b.control.hook.AddFactory(ctx, serial, secret, model, vendor)
}
