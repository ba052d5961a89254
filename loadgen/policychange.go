package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// The live policy change: during a fan-out at full rate the owner replaces
// the doctor's policy on thermo-1 by a deny, through the control plane
// ($config/users/{owner}/policies/{id}, answered on the response topic).
// Nothing published after the acknowledgement may reach a doctor.
const (
	changeTopic = "$config/users/an/policies/doctor-thermo"
	changeOwner = "an"
)

// DoctorThermoPolicy is examples/bootstrap.yaml's doctor-thermo, restored
// after the change so the broker is left as it was.
const DoctorThermoPolicy = `{"id":"doctor-thermo","description":"Doctors see the flat's temperature to a tenth of a degree",` +
	`"priority":30,"effect":"allow","subjects":["role:doctor"],"resources":["things/thermo-1/data/temperature"],` +
	`"actions":["read"],"constraints":[{"kind":"accuracy","field":"temperature","step":0.1}]}`

const denyDoctorThermo = `{"id":"doctor-thermo","description":"benchmark: doctors see nothing of the flat's temperature",` +
	`"priority":30,"effect":"deny","subjects":["role:doctor"],"resources":["things/thermo-1/data/temperature"],"actions":["read"]}`

// configReply is the control plane's answer to a config publish.
type configReply struct {
	Topic    string   `json:"topic"`
	OK       bool     `json:"ok"`
	Error    string   `json:"error"`
	Warnings []string `json:"warnings"`
}

// changePolicy waits until at, publishes the deny and marks the cut at
// the acknowledgement; then restores the original policy after the run.
func (r *run) changePolicy(ctx context.Context, at time.Time) (*Change, error) {
	id := "bench-an-ctl"
	replies := make(chan configReply, 4)
	cl, err := r.dial(ctx, id, changeOwner, func(pr paho.PublishReceived) (bool, error) {
		var rep configReply
		if err := json.Unmarshal(pr.Packet.Payload, &rep); err != nil {
			rep = configReply{Error: fmt.Sprintf("unreadable reply %q", pr.Packet.Payload)}
		}
		if rep.OK && !r.cut.Load() {
			// The cut: every message published from now on is under the deny.
			r.cutSeq.Store(r.flows[0].sent.Load())
			r.cut.Store(true)
		}
		replies <- rep
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			_ = cl.Disconnect(&paho.Disconnect{})
		}
	}()
	replyTopic := "$config/replies/" + id + "/bench"
	if _, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$config/replies/" + id + "/#", QoS: 1}}}); err != nil {
		return nil, fmt.Errorf("subscribing to the control plane's replies: %w", err)
	}
	send := func(doc string) (configReply, time.Duration, error) {
		t0 := time.Now()
		_, err := cl.Publish(ctx, &paho.Publish{Topic: changeTopic, QoS: 1, Retain: true, Payload: []byte(doc),
			Properties: &paho.PublishProperties{ResponseTopic: replyTopic, CorrelationData: []byte("bench")}})
		if err != nil {
			return configReply{}, 0, fmt.Errorf("publishing %s: %w", changeTopic, err)
		}
		select {
		case rep := <-replies:
			if !rep.OK {
				return rep, 0, fmt.Errorf("%s refused: %s", changeTopic, rep.Error)
			}
			return rep, time.Since(t0), nil
		case <-time.After(10 * time.Second):
			return configReply{}, 0, fmt.Errorf("no reply to %s on %s within 10 s (is the control plane built?)", changeTopic, replyTopic)
		case <-ctx.Done():
			return configReply{}, 0, ctx.Err()
		}
	}
	select {
	case <-time.After(time.Until(at)):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_, took, err := send(denyDoctorThermo)
	if err != nil {
		return nil, err
	}
	ch := &Change{Topic: changeTopic, AtSeq: r.cutSeq.Load(), AckMillis: float64(took.Microseconds()) / 1e3}
	r.restore = func() error {
		defer func() { _ = cl.Disconnect(&paho.Disconnect{}) }()
		if _, _, err := send(DoctorThermoPolicy); err != nil {
			return fmt.Errorf("restoring doctor-thermo: %w", err)
		}
		return nil
	}
	keep = true
	return ch, nil
}

// finishChange records when the deny applied, from the last message any
// doctor received (call after the drain).
func (r *run) finishChange(ch *Change) {
	var next uint64
	for _, rc := range r.receivers {
		if rc.view == Rounded && rc.flows[0] != nil {
			next = max(next, rc.flows[0].next.Load())
		}
	}
	ch.AppliedFromSeq = next
	if next > ch.AtSeq+1 {
		ch.Lag = next - ch.AtSeq - 1
	}
}
