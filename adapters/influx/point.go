package influx

import (
	"errors"
	"fmt"
	"strconv"
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

// Line is the reading in line protocol (nanosecond precision) with the
// final newline: the same point Point builds, encoded without the client
// library's per-field formatting (fmt) because it runs in the publish path.
// A string value's newlines are written as the two characters \n, so
// that a record is always one line.
func Line(r Reading) (string, error) {
	b, err := AppendLine(nil, r)
	return string(b), err
}

// AppendLine appends Line(r) to dst.
func AppendLine(dst []byte, r Reading) ([]byte, error) {
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(r.Payload)
	if err != nil {
		return dst, fmt.Errorf("%w: %v", ErrNotAReading, err)
	}
	o, err := v.Object()
	if err != nil {
		return dst, fmt.Errorf("%w: a %s, want a JSON object", ErrNotAReading, v.Type())
	}
	start := len(dst)
	dst = appendEscaped(dst, r.Stream, false)
	for _, t := range [...][2]string{{TagThing, r.Thing}, {TagOwner, r.Owner}, {TagKind, r.Kind}, {TagPlace, r.Place}} {
		if t[1] != "" {
			dst = append(dst, ',')
			dst = appendEscaped(dst, t[0], true)
			dst = append(dst, '=')
			dst = appendEscaped(dst, t[1], true)
		}
	}
	dst = append(dst, ' ')
	fieldsAt := len(dst)
	ts := r.Received
	var name []byte
	o.Visit(func(k []byte, v *fastjson.Value) {
		if string(k) == TimeField {
			if t, ok := readingTime(v); ok {
				ts = t
				return
			}
		}
		name = append(name[:0], k...)
		dst = appendFields(dst, name, v, 1, fieldsAt)
	})
	if len(dst) == fieldsAt {
		return dst[:start], fmt.Errorf("%w: no number, boolean or string field", ErrNotAReading)
	}
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, ts.UnixNano(), 10)
	return append(dst, '\n'), nil
}

// appendFields appends name=value for a scalar, or the flattened members
// of an object; fieldsAt tells whether a comma is needed.
func appendFields(dst, name []byte, v *fastjson.Value, depth, fieldsAt int) []byte {
	sep := func() {
		if len(dst) > fieldsAt {
			dst = append(dst, ',')
		}
		dst = appendEscaped(dst, string(name), true)
		dst = append(dst, '=')
	}
	switch v.Type() {
	case fastjson.TypeNumber:
		sep()
		dst = strconv.AppendFloat(dst, v.GetFloat64(), 'g', -1, 64)
	case fastjson.TypeString:
		sep()
		dst = appendString(dst, v.GetStringBytes())
	case fastjson.TypeTrue:
		sep()
		dst = append(dst, "true"...)
	case fastjson.TypeFalse:
		sep()
		dst = append(dst, "false"...)
	case fastjson.TypeArray:
		sep()
		dst = appendString(dst, v.MarshalTo(nil))
	case fastjson.TypeObject:
		if depth >= maxDepth {
			sep()
			return appendString(dst, v.MarshalTo(nil))
		}
		n := len(name)
		v.GetObject().Visit(func(k []byte, c *fastjson.Value) {
			name = append(append(name[:n], '.'), k...)
			dst = appendFields(dst, name, c, depth+1, fieldsAt)
		})
	}
	return dst
}

// appendEscaped escapes a measurement (commas, spaces) or a tag key, tag
// value or field key (also '='), as the client library does.
func appendEscaped(dst []byte, s string, equal bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\n':
			dst = append(dst, `\\n`...)
		case '\r':
			dst = append(dst, `\\r`...)
		case '\t':
			dst = append(dst, `\\t`...)
		case ' ', ',':
			dst = append(dst, '\\', c)
		case '=':
			if equal {
				dst = append(dst, '\\')
			}
			dst = append(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// appendString appends a quoted string field value.
func appendString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for _, c := range s {
		switch c {
		case '\\', '"':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
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
