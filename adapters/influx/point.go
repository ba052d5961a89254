package influx

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/write"
	"github.com/valyala/fastjson"
)

// Reading is one accepted sensor reading as the broker saw it.
type Reading struct {
	Thing, Stream      string // from the topic things/{thing}/data/{stream}
	Owner, Kind, Place string // from the thing document; empty ones are not tagged
	Payload            []byte // the raw JSON object the thing published
	Received           time.Time
}

// ErrNotAReading marks a payload that cannot be archived: not a JSON
// object, or one without a single storable field.
var ErrNotAReading = errors.New("not an archivable reading")

// maxDepth bounds the nesting the flattener follows.
const maxDepth = 32

// Tag keys. Fields keep the reading's own names; a field that happens to
// be called like a tag is stored as a field all the same.
const (
	TagThing = "thing"
	TagOwner = "owner"
	TagKind  = "kind"
	TagPlace = "place"
)

// TimeField is the reading's optional timestamp: RFC 3339 or epoch
// milliseconds. It becomes the point's time and is not stored as a field.
const TimeField = "ts"

var parsers fastjson.ParserPool

// Point turns a reading into an InfluxDB point: measurement = stream, tags
// thing/owner/kind/place, fields = the reading's numbers (always float, so
// that 21 and 21.5 never conflict in one field), booleans and strings,
// nested objects flattened with "." ("position.lat"), arrays stored as
// their JSON text, nulls skipped; time = the reading's "ts" or Received.
func Point(r Reading) (*write.Point, error) {
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(r.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAReading, err)
	}
	o, err := v.Object()
	if err != nil {
		return nil, fmt.Errorf("%w: a %s, want a JSON object", ErrNotAReading, v.Type())
	}
	pt := write.NewPointWithMeasurement(r.Stream)
	pt.AddTag(TagThing, r.Thing)
	for _, t := range [...][2]string{{TagOwner, r.Owner}, {TagKind, r.Kind}, {TagPlace, r.Place}} {
		if t[1] != "" {
			pt.AddTag(t[0], t[1])
		}
	}
	ts := r.Received
	n := 0
	o.Visit(func(k []byte, v *fastjson.Value) {
		if string(k) == TimeField {
			if t, ok := readingTime(v); ok {
				ts = t
				return
			}
		}
		n += addFields(pt, string(k), v, 1)
	})
	if n == 0 {
		return nil, fmt.Errorf("%w: no number, boolean or string field", ErrNotAReading)
	}
	pt.SetTime(ts)
	return pt, nil
}

// Line is Point in line protocol (nanosecond precision), with the final
// newline.
func Line(r Reading) (string, error) {
	pt, err := Point(r)
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	sb.Grow(64 + len(r.Payload))
	write.PointToLineProtocolBuffer(pt, &sb, time.Nanosecond)
	return sb.String(), nil
}

func addFields(pt *write.Point, name string, v *fastjson.Value, depth int) int {
	switch v.Type() {
	case fastjson.TypeNumber:
		pt.AddField(name, v.GetFloat64())
	case fastjson.TypeString:
		pt.AddField(name, string(v.GetStringBytes()))
	case fastjson.TypeTrue:
		pt.AddField(name, true)
	case fastjson.TypeFalse:
		pt.AddField(name, false)
	case fastjson.TypeArray:
		pt.AddField(name, string(v.MarshalTo(nil)))
	case fastjson.TypeObject:
		if depth >= maxDepth {
			pt.AddField(name, string(v.MarshalTo(nil)))
			return 1
		}
		n := 0
		v.GetObject().Visit(func(k []byte, c *fastjson.Value) {
			n += addFields(pt, name+"."+string(k), c, depth+1)
		})
		return n
	default: // null
		return 0
	}
	return 1
}

// readingTime reads "ts": an RFC 3339 string or epoch milliseconds.
func readingTime(v *fastjson.Value) (time.Time, bool) {
	switch v.Type() {
	case fastjson.TypeString:
		t, err := time.Parse(time.RFC3339Nano, string(v.GetStringBytes()))
		return t, err == nil
	case fastjson.TypeNumber:
		f := v.GetFloat64()
		if f < 0 || f > 1e15 { // beyond year 33658: not epoch ms
			return time.Time{}, false
		}
		ms := int64(f)
		return time.UnixMilli(ms).Add(time.Duration((f - float64(ms)) * 1e6)), true
	}
	return time.Time{}, false
}

// Unflatten rebuilds the nested reading from stored field names: the
// inverse of the flattening Point does ("position.lat" → {"position":
// {"lat": …}}). A name that is both a value and a parent keeps the value
// under its full dotted name.
func Unflatten(fields map[string]any) map[string]any {
	out := make(map[string]any, len(fields))
	for name, v := range fields {
		parts := strings.Split(name, ".")
		m := out
		ok := true
		for _, p := range parts[:len(parts)-1] {
			next, exists := m[p]
			if !exists {
				nm := map[string]any{}
				m[p] = nm
				m = nm
				continue
			}
			nm, isMap := next.(map[string]any)
			if !isMap {
				ok = false
				break
			}
			m = nm
		}
		if !ok {
			out[name] = v
			continue
		}
		m[parts[len(parts)-1]] = v
	}
	return out
}
