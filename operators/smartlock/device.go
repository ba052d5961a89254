package smartlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/operators/agent"
)

// Actions are the commands the lock accepts (things/{id}/cmd/{action}).
var Actions = []string{"lock", "unlock"}

// ErrMalformed marks a command payload the lock refuses.
var ErrMalformed = errors.New("malformed command")

// Command is a decoded command payload. An empty payload is a command with
// no fields. Fields: "by" (who asks, shown in the state; the broker's
// audit trail is the authoritative record) and "ts" (when it was sent:
// RFC 3339 or epoch milliseconds; a command older than the lock's maximum
// age is refused, so a delayed command never moves the lock).
type Command struct {
	By string
	TS time.Time
}

// ParseCommand decodes and checks a payload. Anything but an empty (or
// white-space) payload or exactly one JSON object of the known fields is
// ErrMalformed.
func ParseCommand(payload []byte, now time.Time, maxAge time.Duration) (Command, error) {
	var c Command
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) == 0 {
		return c, nil
	}
	// Only an object: json.Decoder decodes null into the struct as a no-op,
	// which would make "null" an unlock without by or ts.
	if trimmed[0] != '{' {
		return c, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var raw struct {
		By *string         `json:"by"`
		TS json.RawMessage `json:"ts"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return c, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// Nothing but white space may follow the object. dec.More() is not
	// enough: it is false before a stray '}' or ']'.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	if raw.By != nil {
		if err := checkName(*raw.By); err != nil {
			return c, err
		}
		c.By = *raw.By
	}
	if len(raw.TS) > 0 && string(raw.TS) != "null" {
		ts, err := parseTS(raw.TS)
		if err != nil {
			return c, err
		}
		if age := now.Sub(ts); maxAge > 0 && (age > maxAge || age < -maxAge) {
			return c, fmt.Errorf("%w: ts %s is %s away from the lock's clock (max %s)", ErrMalformed, ts.UTC().Format(time.RFC3339), age.Round(time.Second), maxAge)
		}
		c.TS = ts
	}
	return c, nil
}

func checkName(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("%w: by must be 1–64 characters", ErrMalformed)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return fmt.Errorf("%w: by contains a control or space character", ErrMalformed)
		}
	}
	return nil
}

func parseTS(b json.RawMessage) (time.Time, error) {
	var s string
	if json.Unmarshal(b, &s) == nil {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: ts %q is not RFC 3339", ErrMalformed, s)
		}
		return t, nil
	}
	ms, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: ts %s is neither RFC 3339 nor epoch milliseconds", ErrMalformed, b)
	}
	return time.UnixMilli(ms), nil
}

// Device is the smartlock operator.
type Device struct {
	Relay       Relay
	Door        DoorContact // nil: no contact wired
	Clock       Clock       // nil: the wall clock
	RelockAfter time.Duration
	MaxAge      time.Duration // commands with an older ts are refused (default 60 s)
	Log         zerolog.Logger

	lock atomic.Pointer[Lock]
}

// Enrolment implements agent.Device: an actuator with no data streams.
func (d *Device) Enrolment() agent.Enrolment { return agent.Enrolment{Kind: "actuator"} }

// Actions implements agent.Commander.
func (d *Device) Actions() []string { return Actions }

// Run implements agent.Device.
func (d *Device) Run(ctx context.Context, out agent.Output) error {
	if d.Clock == nil {
		d.Clock = RealClock{}
	}
	door := DoorUnknown
	if d.Door != nil {
		open, err := d.Door.Open()
		if err != nil {
			return fmt.Errorf("smartlock: door contact: %w", err)
		}
		door = map[bool]string{true: DoorOpen, false: DoorClosed}[open]
	}
	l, err := NewLock(d.Relay, d.Clock, d.RelockAfter, door, func(s State) {
		out.State(s)
		d.Log.Info().Bool("locked", s.Locked).Str("door", s.Door).Str("by", s.By).Msg("state")
	})
	if err != nil {
		return err
	}
	d.lock.Store(l)
	if d.Door != nil {
		go d.Door.Watch(ctx, l.DoorChanged)
	}
	<-ctx.Done()
	// Leave the door locked when the operator stops, for good: a command
	// the agent is still handling must not unlock after this.
	if err := l.Stop(); err != nil {
		d.Log.Error().Err(err).Msg("could not lock on shutdown")
	}
	return nil
}

// Command implements agent.Commander.
func (d *Device) Command(action string, payload []byte) error {
	l := d.lock.Load()
	if l == nil {
		return errors.New("smartlock: not ready")
	}
	maxAge := d.MaxAge
	if maxAge <= 0 {
		maxAge = time.Minute
	}
	c, err := ParseCommand(payload, d.Clock.Now(), maxAge)
	if err != nil {
		return err
	}
	if c.By == "" {
		c.By = "remote"
	}
	switch action {
	case "unlock":
		return l.Unlock(c.By)
	case "lock":
		return l.Lock(c.By)
	}
	return fmt.Errorf("%w: unknown action %q", ErrMalformed, action)
}
