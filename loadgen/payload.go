// Package loadgen is Veil's broker load generator (`veil bench`): MQTT v5
// clients (paho.golang) in fan-out, fan-in and point-to-point scenarios,
// with end-to-end latency taken from a timestamp carried in each payload
// and an entitlement check of every delivered payload: each subscriber
// must receive exactly the view it is entitled to (raw, rounded or none).
// A leaked or mis-rewritten message fails the run.
package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// View is what a subscriber is entitled to see of a message.
type View uint8

const (
	// Raw: the payload exactly as published.
	Raw View = iota
	// Rounded: the payload with "temperature" rounded to RoundStep, every
	// other field untouched (the example household's doctor).
	Rounded
	// None: nothing; any delivery is a leak.
	None
)

// RoundStep is the accuracy the doctor is entitled to on temperatures
// (examples/bootstrap.yaml, policy doctor-thermo).
const RoundStep = 0.1

func (v View) String() string {
	switch v {
	case Raw:
		return "raw"
	case Rounded:
		return "rounded"
	case None:
		return "none"
	}
	return fmt.Sprintf("view(%d)", v)
}

// ParseView reads raw, rounded or none.
func ParseView(s string) (View, error) {
	switch s {
	case "raw":
		return Raw, nil
	case "rounded":
		return Rounded, nil
	case "none":
		return None, nil
	}
	return 0, fmt.Errorf("view %q: want raw, rounded or none", s)
}

// Temperature is the reading of message seq: never on a rounding tie
// (its third decimal is 3), so the rounded value is unambiguous.
func Temperature(seq uint64) float64 {
	return 20 + float64(seq%500)/100 + 0.003
}

// Payload builds message seq of flow, stamped with sentNanos (Unix ns) in
// the string field "t" — a string, so no numeric constraint touches it —
// and padded with a "pad" field to at least size bytes.
//
//	{"f":"3","s":"17","t":"1764100000000000000","temperature":20.173,"pad":"xxxx"}
func Payload(flow int, seq uint64, sentNanos int64, size int) []byte {
	b := make([]byte, 0, max(size, 96))
	b = append(b, `{"f":"`...)
	b = strconv.AppendInt(b, int64(flow), 10)
	b = append(b, `","s":"`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `","t":"`...)
	b = strconv.AppendInt(b, sentNanos, 10)
	b = append(b, `","temperature":`...)
	b = strconv.AppendFloat(b, Temperature(seq), 'f', 3, 64)
	b = append(b, `,"pad":"`...)
	for n := size - len(b) - 2; n > 0; n-- {
		b = append(b, 'x')
	}
	b = append(b, `"}`...)
	return b
}

// header is what a receiver reads from any payload before judging it.
type header struct {
	flow int
	seq  uint64
	sent int64
}

// scanHeader reads f, s and t from the front of a payload without a full
// JSON parse (the order Payload writes them in; a broker that reorders
// fields falls back to parsing).
func scanHeader(p []byte) (header, bool) {
	var h header
	rest, f, ok := scanString(p, `{"f":"`)
	if !ok {
		return parseHeader(p)
	}
	rest, s, ok := scanString(rest, `,"s":"`)
	if !ok {
		return parseHeader(p)
	}
	_, t, ok := scanString(rest, `,"t":"`)
	if !ok {
		return parseHeader(p)
	}
	fl, err1 := strconv.Atoi(string(f))
	sq, err2 := strconv.ParseUint(string(s), 10, 64)
	ts, err3 := strconv.ParseInt(string(t), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return h, false
	}
	return header{flow: fl, seq: sq, sent: ts}, true
}

func scanString(p []byte, prefix string) (rest, value []byte, ok bool) {
	if !bytes.HasPrefix(p, []byte(prefix)) {
		return nil, nil, false
	}
	p = p[len(prefix):]
	end := bytes.IndexByte(p, '"')
	if end < 0 {
		return nil, nil, false
	}
	return p[end+1:], p[:end], true
}

func parseHeader(p []byte) (header, bool) {
	var m struct{ F, S, T string }
	if json.Unmarshal(p, &m) != nil {
		return header{}, false
	}
	fl, err1 := strconv.Atoi(m.F)
	sq, err2 := strconv.ParseUint(m.S, 10, 64)
	ts, err3 := strconv.ParseInt(m.T, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return header{}, false
	}
	return header{flow: fl, seq: sq, sent: ts}, true
}

// Check judges a delivered payload against the view its receiver is
// entitled to; nil means it is exactly what that receiver may see. size is
// the payload size the publisher was asked for.
func Check(v View, got []byte, size int) error {
	h, ok := scanHeader(got)
	if !ok {
		return fmt.Errorf("unreadable payload %.80q", got)
	}
	want := Payload(h.flow, h.seq, h.sent, size)
	switch v {
	case None:
		return fmt.Errorf("leak: flow %d message %d delivered to a subscriber entitled to nothing", h.flow, h.seq)
	case Raw:
		if !bytes.Equal(got, want) {
			return fmt.Errorf("flow %d message %d: raw view altered: got %.120q, want %.120q", h.flow, h.seq, got, want)
		}
		return nil
	case Rounded:
		return checkRounded(h, got, want)
	}
	return fmt.Errorf("unknown view %d", v)
}

// checkRounded requires the same fields as published, "temperature"
// rounded to RoundStep and every other field unchanged.
func checkRounded(h header, got, want []byte) error {
	if sameButTemperature(h, got, want) {
		return nil
	}
	return checkRoundedParsed(h, got, want)
}

// sameButTemperature is checkRounded's fast path, so that checking costs the
// load generator (which shares the machine with the broker) little more than
// a raw view does: got is want byte for byte except the temperature's
// number, which is the rounded one. A broker that reorders or reformats
// fields is judged by the full parse instead.
func sameButTemperature(h header, got, want []byte) bool {
	const key = `"temperature":`
	i := bytes.Index(want, []byte(key))
	if i < 0 {
		return false
	}
	i += len(key)
	wantEnd := i + bytes.IndexByte(want[i:], ',')
	if wantEnd < i || !bytes.HasPrefix(got, want[:i]) {
		return false
	}
	rest := want[wantEnd:]
	if len(got) < i+len(rest) || !bytes.HasSuffix(got, rest) {
		return false
	}
	x, err := strconv.ParseFloat(string(got[i:len(got)-len(rest)]), 64)
	return err == nil && math.Abs(x-math.Round(Temperature(h.seq)/RoundStep)*RoundStep) <= 1e-9
}

// checkRoundedParsed judges a rounded view field by field.
func checkRoundedParsed(h header, got, want []byte) error {
	var g, w map[string]json.RawMessage
	if err := json.Unmarshal(got, &g); err != nil {
		return fmt.Errorf("flow %d message %d: rounded view is not JSON: %v", h.flow, h.seq, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		return err
	}
	if len(g) != len(w) {
		return fmt.Errorf("flow %d message %d: rounded view has %d fields, want %d: %.120q", h.flow, h.seq, len(g), len(w), got)
	}
	for k, wv := range w {
		gv, ok := g[k]
		if !ok {
			return fmt.Errorf("flow %d message %d: rounded view lacks %q", h.flow, h.seq, k)
		}
		if k != "temperature" {
			if !bytes.Equal(gv, wv) {
				return fmt.Errorf("flow %d message %d: field %q altered: %s, want %s", h.flow, h.seq, k, gv, wv)
			}
			continue
		}
		x, err := strconv.ParseFloat(string(gv), 64)
		if err != nil {
			return fmt.Errorf("flow %d message %d: temperature %s is not a number", h.flow, h.seq, gv)
		}
		exact := Temperature(h.seq)
		rounded := math.Round(exact/RoundStep) * RoundStep
		if math.Abs(x-rounded) > 1e-9 {
			if math.Abs(x-exact) < 1e-9 {
				return fmt.Errorf("flow %d message %d: leak: raw temperature %s delivered to a rounded view", h.flow, h.seq, gv)
			}
			return fmt.Errorf("flow %d message %d: temperature %s, want %g (%g rounded to %g)", h.flow, h.seq, gv, rounded, exact, RoundStep)
		}
	}
	return nil
}
