package influx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/write"
	"github.com/valyala/fastjson"
)

// Reading is one accepted sensor reading as the broker saw it.
type Reading struct {
	Thing, Stream      string // from the topic things/{thing}/data/{stream}
	Owner, Kind, Place string // from the thing document; empty ones are not tagged
	Payload            []byte // the raw JSON object the thing published
	// Received is when the broker took the reading (the enforcer's time)
	// and is the point's time. A "ts" the thing put in the reading is a
	// field like any other: a thing choosing its readings' archive time
	// would break a rate (live and history count periods of the broker's
	// time) and could place readings weeks ahead, into other answers.
	Received time.Time
}

// ErrNotAReading marks a payload that cannot be archived: not a JSON
// object, one without a single storable field, or one whose stream, thing
// or tags InfluxDB's line protocol cannot carry exactly.
var ErrNotAReading = errors.New("not an archivable reading")

// maxDepth bounds the nesting the flattener follows.
const maxDepth = 32

// Tag keys. Fields never take their names: a number field called like a
// tag is stored with SuffixNumber, every other field has a suffix.
const (
	TagThing = "thing"
	TagOwner = "owner"
	TagKind  = "kind"
	TagPlace = "place"
)

// Field key suffixes. InfluxDB fixes a field's type (per shard) by the
// first value written, and every owner's readings of a stream name share
// one measurement: one thing writing {"temperature":"x"} first would make
// every other thing's float temperature in that shard be refused. So the
// stored key of a field names its type: a number (always a float) keeps
// its name, a string, a boolean or JSON text (an array, an object nested
// too deep) gets a suffix. A number whose name ends like a suffix, is
// reserved (a tag key, "time", which InfluxDB refuses, a column Flux adds)
// or would leave a key InfluxDB cannot take (empty, or ending in a
// backslash) gets SuffixNumber. The mapping is one-to-one, and the stored
// key alone fixes the type: no reading can make another's field conflict.
// FieldOf maps a stored key back.
const (
	SuffixString = ":str"
	SuffixBool   = ":bool"
	SuffixJSON   = ":json"
	SuffixNumber = ":num"
)

// reserved reports the names of number fields stored with SuffixNumber
// though they end in no suffix.
func reserved(name string) bool {
	switch name {
	case TagThing, TagOwner, TagKind, TagPlace, "time",
		"result", "table", "_start", "_stop", "_time", "_measurement", "_field", "_value":
		return true
	}
	return false
}

var parsers fastjson.ParserPool

type fieldKind byte

const (
	kindNumber fieldKind = iota
	kindString
	kindBool
	kindJSON // arrays, and objects nested deeper than maxDepth
)

var kindSuffix = [...]string{kindNumber: "", kindString: SuffixString, kindBool: SuffixBool, kindJSON: SuffixJSON}

// appendStoredKey appends the key under which a field of kind k named
// name (flattened with ".") is stored.
func appendStoredKey(dst, name []byte, k fieldKind) []byte {
	dst = append(dst, name...)
	if k != kindNumber {
		return append(dst, kindSuffix[k]...)
	}
	if len(name) == 0 || name[len(name)-1] == '\\' || reserved(string(name)) || endsInSuffix(string(name)) {
		dst = append(dst, SuffixNumber...)
	}
	return dst
}

func endsInSuffix(s string) bool {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return false
	}
	switch s[i:] {
	case SuffixString, SuffixBool, SuffixJSON, SuffixNumber:
		return true
	}
	return false
}

// FieldOf maps a stored field key and its value back to the reading's
// (flattened) field name and value, the inverse of appendStoredKey; JSON
// text comes back as the JSON it was. A key without a suffix is a number,
// or a string or boolean archived before fields were named by type: it is
// returned as it is.
func FieldOf(key string, v any) (string, any) {
	switch {
	case strings.HasSuffix(key, SuffixString):
		if _, ok := v.(string); ok {
			return strings.TrimSuffix(key, SuffixString), v
		}
	case strings.HasSuffix(key, SuffixBool):
		if _, ok := v.(bool); ok {
			return strings.TrimSuffix(key, SuffixBool), v
		}
	case strings.HasSuffix(key, SuffixJSON):
		if s, ok := v.(string); ok && json.Valid([]byte(s)) {
			return strings.TrimSuffix(key, SuffixJSON), json.RawMessage(s)
		}
	case strings.HasSuffix(key, SuffixNumber):
		if _, ok := v.(float64); ok {
			return strings.TrimSuffix(key, SuffixNumber), v
		}
	}
	return key, v
}

// representable reports whether InfluxDB's line protocol (the parser of
// 1.8 and 2.x alike) can carry name exactly as a measurement, tag or field
// key. A backslash is taken literally except before a character it
// escapes, and a doubled one is not unescaped: so a backslash that ends a
// name or stands before a space, comma, "=" or '"' cannot be written (it
// would escape the delimiter after it, and the whole request is refused).
// A newline ends the record (an escaped one keeps its backslash), and a
// leading tab is skipped as whitespace. An empty name is no name.
func representable(name string) bool {
	if name == "" || name[0] == '\t' {
		return false
	}
	for i := 0; i < len(name); i++ {
		if unfitAt(name, i) {
			return false
		}
	}
	return true
}

// unfitAt reports whether the byte at i keeps name from being written
// exactly (see representable).
func unfitAt(name string, i int) bool {
	switch c := name[i]; {
	case c < 0x20 && c != '\t', c == 0x7f:
		// Control bytes: influxd takes a leading NUL for a space (the
		// name would be stored as another), and echoes a refused name in
		// a response header Go's HTTP client refuses (the batch would be
		// sent again for ever, every owner's readings waiting behind it).
		return true
	case c == '\\':
		if i == len(name)-1 {
			return true
		}
		switch name[i+1] {
		case ' ', ',', '=', '"':
			return true
		}
	}
	return false
}

// parseObject parses a reading's payload as a JSON object.
func parseObject(p *fastjson.Parser, payload []byte) (*fastjson.Object, error) {
	v, err := p.ParseBytes(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAReading, err)
	}
	o, err := v.Object()
	if err != nil {
		return nil, fmt.Errorf("%w: a %s, want a JSON object", ErrNotAReading, v.Type())
	}
	return o, nil
}

// checkNames refuses a reading whose stream or tags the line protocol
// cannot carry exactly: history finds readings by them, so one stored
// under another name would be lost all the same, and one written as it is
// would make InfluxDB 2.x refuse the whole batch with it.
func checkNames(r Reading) error {
	if !representable(r.Stream) {
		return fmt.Errorf("%w: the stream name %q cannot be stored in InfluxDB", ErrNotAReading, r.Stream)
	}
	for _, t := range [...][2]string{{TagThing, r.Thing}, {TagOwner, r.Owner}, {TagKind, r.Kind}, {TagPlace, r.Place}} {
		if t[1] != "" && !representable(t[1]) {
			return fmt.Errorf("%w: the %s %q cannot be stored in InfluxDB", ErrNotAReading, t[0], t[1])
		}
	}
	return nil
}

// errAmbiguous refuses a reading whose flattened field names meet (see
// walker.note): live, a view withholds a payload with a duplicate key.
var errAmbiguous = fmt.Errorf("%w: a duplicate key, or a name that is both a value and an object's (\"a\" and \"a.b\")", ErrNotAReading)

// walker flattens a reading's fields into a line (dst) or, for Point, a
// client library point (pt), each under its stored key. Fields InfluxDB
// cannot hold are skipped and counted: a number beyond float64 (JSON
// allows 1e400; InfluxDB has no infinity, and "+Inf" is a parse error)
// and a name the line protocol cannot carry (see representable). Nulls
// are skipped silently, as before. Walkers are pooled for their buffers:
// Append runs in the publish path.
type walker struct {
	dst      []byte
	fieldsAt int // where the fields begin in dst: past it a comma separates
	pt       *write.Point
	n        int // fields written
	skipped  int
	name     []byte // the flattened name being walked
	key      []byte // the stored key being written
	// The flattened names walked so far (names, ends into it), and
	// whether two were ambiguous: history would rebuild such a reading
	// otherwise than it was sent (see ambiguous).
	names     []byte
	ends      []int
	leaves    map[string]bool // past notePairs names
	parents   map[string]bool
	ambiguous bool
}

// note records name, a field's flattened name, and whether it meets one
// walked before (ambiguous): the same (a duplicate key, or "a.b" and a
// nested a{b}), or one a parent of the other ({"a":1,"a.b":2}). Unflatten
// could not rebuild such a reading as it was: a value could come back out
// from under the object a view drops or rounds. Pairs are compared up to
// a few fields; past them sets are kept (a reading of 256 KiB has tens of
// thousands of fields, and the check runs in the publish path).
func (w *walker) note(name []byte) {
	if w.ambiguous {
		return
	}
	if len(w.ends) < notePairs {
		start := 0
		for _, end := range w.ends {
			seen := w.names[start:end]
			start = end
			short, long := seen, name
			if len(short) > len(long) {
				short, long = long, short
			}
			if bytes.HasPrefix(long, short) && (len(long) == len(short) || long[len(short)] == '.') {
				w.ambiguous = true
				return
			}
		}
		w.names = append(w.names, name...)
		w.ends = append(w.ends, len(w.names))
		return
	}
	if w.leaves == nil {
		w.leaves, w.parents = map[string]bool{}, map[string]bool{}
		start := 0
		for _, end := range w.ends {
			w.remember(string(w.names[start:end]))
			start = end
		}
	}
	n := string(name)
	if w.leaves[n] || w.parents[n] {
		w.ambiguous = true
		return
	}
	for i := 0; i < len(n); i++ {
		if n[i] == '.' && w.leaves[n[:i]] {
			w.ambiguous = true
			return
		}
	}
	w.remember(n)
}

// notePairs is how many names note compares pairwise before it keeps sets.
const notePairs = 16

// remember adds a leaf name and its dotted parents to the sets.
func (w *walker) remember(n string) {
	w.leaves[n] = true
	for i := 0; i < len(n); i++ {
		if n[i] == '.' {
			w.parents[n[:i]] = true
		}
	}
}

var walkers = sync.Pool{New: func() any { return new(walker) }}

// fields walks every member of o.
func (w *walker) fields(o *fastjson.Object) {
	o.Visit(func(k []byte, v *fastjson.Value) {
		w.name = append(w.name[:0], k...)
		w.field(v, 1)
	})
}

// field walks v, named w.name.
func (w *walker) field(v *fastjson.Value, depth int) {
	var k fieldKind
	var f float64
	switch v.Type() {
	case fastjson.TypeNumber:
		if f = v.GetFloat64(); math.IsInf(f, 0) || math.IsNaN(f) {
			w.note(w.name)
			w.skipped++
			return
		}
		k = kindNumber
	case fastjson.TypeString:
		k = kindString
	case fastjson.TypeTrue, fastjson.TypeFalse:
		k = kindBool
	case fastjson.TypeArray:
		k = kindJSON
	case fastjson.TypeObject:
		if depth >= maxDepth {
			k = kindJSON
			break
		}
		n := len(w.name)
		v.GetObject().Visit(func(key []byte, c *fastjson.Value) {
			w.name = append(append(w.name[:n], '.'), key...)
			w.field(c, depth+1)
		})
		w.name = w.name[:n]
		return
	default: // null
		return
	}
	w.note(w.name)
	w.key = appendStoredKey(w.key[:0], w.name, k)
	if w.pt != nil {
		if !representable(string(w.key)) {
			w.skipped++
			return
		}
		w.n++
		switch k {
		case kindNumber:
			w.pt.AddField(string(w.key), f)
		case kindString:
			w.pt.AddField(string(w.key), string(v.GetStringBytes()))
		case kindBool:
			w.pt.AddField(string(w.key), v.Type() == fastjson.TypeTrue)
		case kindJSON:
			w.pt.AddField(string(w.key), string(v.MarshalTo(nil)))
		}
		return
	}
	mark := len(w.dst)
	if mark > w.fieldsAt {
		w.dst = append(w.dst, ',')
	}
	var ok bool
	if w.dst, ok = appendName(w.dst, string(w.key), true); !ok {
		w.dst = w.dst[:mark]
		w.skipped++
		return
	}
	w.n++
	w.dst = append(w.dst, '=')
	switch k {
	case kindNumber:
		w.dst = strconv.AppendFloat(w.dst, f, 'g', -1, 64)
	case kindString:
		w.dst = appendString(w.dst, v.GetStringBytes())
	case kindBool:
		w.dst = strconv.AppendBool(w.dst, v.Type() == fastjson.TypeTrue)
	case kindJSON:
		w.key = v.MarshalTo(w.key[:0]) // the key is written: its buffer serves
		w.dst = appendString(w.dst, w.key)
	}
}

// Point turns a reading into an InfluxDB point: measurement = stream, tags
// thing/owner/kind/place, fields = the reading's numbers (always float, so
// that 21 and 21.5 never conflict in one field), booleans and strings,
// nested objects flattened with "." ("position.lat"), arrays stored as
// their JSON text, nulls skipped, each under a key naming its type (see
// SuffixString); time = Received (a "ts" in the reading is a field).
// Fields InfluxDB cannot hold are skipped (see walker).
func Point(r Reading) (*write.Point, error) {
	p := parsers.Get()
	defer parsers.Put(p)
	o, err := parseObject(p, r.Payload)
	if err != nil {
		return nil, err
	}
	if err := checkNames(r); err != nil {
		return nil, err
	}
	pt := write.NewPointWithMeasurement(r.Stream)
	pt.AddTag(TagThing, r.Thing)
	for _, t := range [...][2]string{{TagOwner, r.Owner}, {TagKind, r.Kind}, {TagPlace, r.Place}} {
		if t[1] != "" {
			pt.AddTag(t[0], t[1])
		}
	}
	w := walker{pt: pt}
	w.fields(o)
	if w.ambiguous {
		return nil, errAmbiguous
	}
	if w.n == 0 {
		return nil, fmt.Errorf("%w: no number, boolean or string field InfluxDB can hold", ErrNotAReading)
	}
	pt.SetTime(r.Received)
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
	dst, _, err := appendLine(dst, r)
	return dst, err
}

// appendLine is AppendLine that also tells how many fields it skipped.
func appendLine(dst []byte, r Reading) ([]byte, int, error) {
	p := parsers.Get()
	defer parsers.Put(p)
	o, err := parseObject(p, r.Payload)
	if err != nil {
		return dst, 0, err
	}
	start := len(dst)
	dst, ok := appendName(dst, r.Stream, false)
	if !ok {
		return dst, 0, checkNames(r)
	}
	for _, t := range [...][2]string{{TagThing, r.Thing}, {TagOwner, r.Owner}, {TagKind, r.Kind}, {TagPlace, r.Place}} {
		if t[1] != "" {
			dst = append(dst, ',')
			dst = append(dst, t[0]...)
			dst = append(dst, '=')
			if dst, ok = appendName(dst, t[1], true); !ok {
				return dst[:start], 0, checkNames(r) // which one, and why
			}
		}
	}
	dst = append(dst, ' ')
	w := walkers.Get().(*walker)
	defer walkers.Put(w)
	w.dst, w.fieldsAt, w.n, w.skipped = dst, len(dst), 0, 0
	w.names, w.ends, w.leaves, w.parents, w.ambiguous = w.names[:0], w.ends[:0], nil, nil, false
	w.fields(o)
	dst, w.dst = w.dst, nil        // the caller's, not the pool's
	w.leaves, w.parents = nil, nil // a big reading's sets, not kept in the pool
	if cap(w.names) > 64<<10 {
		w.names, w.ends = nil, nil
	}
	if w.ambiguous {
		return dst[:start], 0, errAmbiguous
	}
	if w.n == 0 {
		return dst[:start], w.skipped, fmt.Errorf("%w: no number, boolean or string field InfluxDB can hold", ErrNotAReading)
	}
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, r.Received.UnixNano(), 10)
	return append(dst, '\n'), w.skipped, nil
}

// appendName appends a measurement (equal false: commas and spaces
// escaped) or a tag key, tag value or field key (also '=') as the client
// library does, but for a tab, which stays a tab (the library writes two
// backslashes and a t, which InfluxDB stores as such); a backslash is left
// as it is, which InfluxDB takes literally. A name that is not
// representable is not appended: ok is false. One pass, checking as it
// escapes: it runs in the publish path.
func appendName(dst []byte, name string, equal bool) (_ []byte, ok bool) {
	if name == "" || name[0] == '\t' {
		return dst, false
	}
	start := len(dst)
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case ' ', ',':
			dst = append(dst, '\\', c)
		case '=':
			if equal {
				dst = append(dst, '\\')
			}
			dst = append(dst, c)
		case '\\':
			if unfitAt(name, i) {
				return dst[:start], false
			}
			dst = append(dst, c)
		default:
			if c < 0x20 && c != '\t' || c == 0x7f { // unfitAt's control bytes
				return dst[:start], false
			}
			dst = append(dst, c)
		}
	}
	return dst, true
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

// Unflatten rebuilds the nested reading from its flattened field names
// (as FieldOf gives them): the inverse of the flattening Point does ("position.lat" → {"position":
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
