package policies

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// ErrWithheld is wrapped by every error View.Apply, View.Render and
// ParsePayload return: the message must not reach this requester at all
// (not empty, not raw).
var ErrWithheld = errors.New("withheld")

// Limits and constants of the rewrite. The step, geo and pseudonym ones are
// part of the output format: changing one changes what subscribers receive.
const (
	// maxDepth bounds the nesting of a payload. Readings are flat; the bound
	// keeps a hostile "[[[[…" from growing the parser's stack.
	maxDepth = 64
	// maxStepDecimals bounds the decimals an accuracy step may have; a
	// finer step is not a coarsening but a typo (or a float artefact like
	// 0.30000000000000004), and NewView rejects it.
	maxStepDecimals = 15
	// metersPerDegree is the length of one degree of latitude (and of
	// longitude at the equator), the figure geo grids are built on.
	metersPerDegree = 111320.0
	// geoDecimals is how many decimals a coarsened coordinate keeps at most
	// (about 0.1 m): finer than any sensible grid, so snapping decides the
	// precision, not the formatting.
	geoDecimals = 6
	// pseudonymBytes is how much of the HMAC a pseudonym keeps: 96 bits make
	// accidental collisions negligible while keeping the value short.
	pseudonymBytes = 12
	// linearDupLimit is how many keys an object may have before duplicate
	// detection switches from comparing pairs to a map.
	linearDupLimit = 16
	// maxPooledBytes and maxPooledItems keep the pooled parser state from
	// pinning the buffers of an exceptionally large payload.
	maxPooledBytes = 64 << 10
	maxPooledItems = 4 << 10
)

// View is a compiled, immutable set of constraints: what one class of
// requesters sees of a payload. Requesters whose decisions share a View
// (equal Key) receive the same bytes, so a fan-out rewrites once per view:
// ParsePayload once per message, then Render once per view (Apply does
// both for a single view).
//
// Apply and Render work on a JSON object and fail closed. Field names are
// dotted paths into nested objects ("position.lat"); the names a
// fields{keep|drop} constraint lists are top-level keys only, and NewView
// rejects dotted ones there rather than guess (a drop that silently missed
// a nested key would leak it). Paths and keep/drop match decoded key names,
// so "\u006cat" is "lat": escaping a key cannot smuggle a value past a
// constraint.
//
// A View is safe for concurrent use.
type View struct {
	key      string
	rate     time.Duration
	ops      []viewOp
	rewrites bool
	cs       []Constraint // as given to NewView (Constraints)
	// hmacs pools HMAC-SHA256 states keyed with the owner's key; nil unless
	// a pseudonymize constraint is present.
	hmacs *sync.Pool
}

// opKind is a constraint compiled for Render.
type opKind uint8

const (
	opAccuracy opKind = iota + 1
	opGeo
	opRange
	opKeep
	opDrop
	opPseudonymize
)

// viewOp is one compiled constraint. Which fields matter depends on kind.
type viewOp struct {
	kind     opKind
	field    string   // accuracy, range, pseudonymize: the path as written; geo: lat
	path     []string // field split at dots
	field2   string   // geo: lon
	path2    []string
	step     float64  // accuracy
	decimals int      // accuracy: decimals the step has
	units    int64    // accuracy: step·10^decimals when that is an exact integer, else 0
	meters   float64  // geo
	min, max float64  // range: ±Inf when absent
	names    []string // keep, drop: sorted, without duplicates
	prefix   []byte   // pseudonymize: field + "\x00", the start of the HMAC input
	rate     time.Duration
}

// NewView compiles validated constraints. key is the owner's
// pseudonymisation key (HMAC key); it only matters for pseudonymize.
//
// The decoder has validated cs already; NewView still rejects an unknown
// kind or a value it cannot apply (a step that is not a positive finite
// number, a min above max, an empty path, an empty key for pseudonymize)
// with an error naming the constraint, so that a bad document cannot crash
// or quietly weaken enforcement.
func NewView(key []byte, cs []Constraint) (*View, error) {
	v := &View{cs: slices.Clone(cs)}
	var kb strings.Builder
	pseudo := false
	for i, c := range cs {
		op, err := compileConstraint(c)
		if err != nil {
			return nil, fmt.Errorf("constraints[%d]: %w", i, err)
		}
		if i > 0 {
			kb.WriteByte(';')
		}
		writeConstraintKey(&kb, c, op)
		switch op.kind {
		case 0: // rate; with several (the decoder allows one) the strictest holds
			v.rate = max(v.rate, op.rate)
			continue
		case opPseudonymize:
			if len(key) == 0 {
				return nil, fmt.Errorf("constraints[%d]: pseudonymize needs the owner's key", i)
			}
			pseudo = true
		}
		v.ops = append(v.ops, op)
	}
	v.rewrites = len(v.ops) > 0
	if pseudo {
		// The key itself must never appear in the view key (it is logged
		// and compared); a short fingerprint keeps views of different
		// owners apart, since their pseudonyms differ.
		fp := sha256.Sum256(key)
		kb.WriteString("|key=")
		kb.WriteString(hex.EncodeToString(fp[:8]))
		k := bytes.Clone(key)
		v.hmacs = &sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}
	}
	v.key = kb.String()
	return v, nil
}

// compileConstraint checks one constraint and turns it into a viewOp. Rate
// yields a zero op: it does not touch payloads.
func compileConstraint(c Constraint) (viewOp, error) {
	var op viewOp
	var err error
	switch c.Kind {
	case ConstraintAccuracy:
		op.kind = opAccuracy
		if op.path, err = splitPath("field", c.Field); err != nil {
			return op, err
		}
		op.field = c.Field
		if !(c.Step > 0) || math.IsInf(c.Step, 0) {
			return op, errors.New("step: must be a positive number")
		}
		op.step = c.Step
		op.decimals = decimalsOf(c.Step)
		if op.decimals > maxStepDecimals {
			return op, fmt.Errorf("step: more than %d decimals", maxStepDecimals)
		}
		scale := math.Pow10(op.decimals)
		if u := math.Round(c.Step * scale); u < 1<<53 && u/scale == c.Step {
			op.units = int64(u)
		}
	case ConstraintGeo:
		op.kind = opGeo
		if op.path, err = splitPath("lat", c.Lat); err != nil {
			return op, err
		}
		if op.path2, err = splitPath("lon", c.Lon); err != nil {
			return op, err
		}
		if c.Lat == c.Lon {
			return op, errors.New("lon: must differ from lat")
		}
		op.field, op.field2 = c.Lat, c.Lon
		if !(c.Meters > 0) || math.IsInf(c.Meters, 0) {
			return op, errors.New("meters: must be a positive number")
		}
		op.meters = c.Meters
	case ConstraintRange:
		op.kind = opRange
		if op.path, err = splitPath("field", c.Field); err != nil {
			return op, err
		}
		op.field = c.Field
		if c.Min == nil && c.Max == nil {
			return op, errors.New("range: needs min or max")
		}
		op.min, op.max = math.Inf(-1), math.Inf(1)
		if c.Min != nil {
			if math.IsNaN(*c.Min) || math.IsInf(*c.Min, 0) {
				return op, errors.New("min: must be a finite number")
			}
			op.min = *c.Min
		}
		if c.Max != nil {
			if math.IsNaN(*c.Max) || math.IsInf(*c.Max, 0) {
				return op, errors.New("max: must be a finite number")
			}
			op.max = *c.Max
		}
		if op.min > op.max {
			return op, errors.New("max: must not be below min")
		}
	case ConstraintFields:
		switch {
		case len(c.Keep) > 0 && len(c.Drop) > 0:
			return op, errors.New("fields: keep and drop are exclusive")
		case len(c.Keep) > 0:
			op.kind = opKeep
			op.names, err = fieldSet("keep", c.Keep)
		case len(c.Drop) > 0:
			op.kind = opDrop
			op.names, err = fieldSet("drop", c.Drop)
		default:
			return op, errors.New("fields: needs keep or drop")
		}
		if err != nil {
			return op, err
		}
	case ConstraintPseudonymize:
		op.kind = opPseudonymize
		if op.path, err = splitPath("field", c.Field); err != nil {
			return op, err
		}
		op.field = c.Field
		op.prefix = append([]byte(c.Field), 0)
	case ConstraintRate:
		if op.rate, err = rateDuration(c.Seconds); err != nil {
			return op, err
		}
	default:
		return op, fmt.Errorf("kind: unknown constraint kind %q", c.Kind)
	}
	return op, nil
}

// splitPath splits a dotted field path, refusing empty segments.
func splitPath(what, p string) ([]string, error) {
	if p == "" {
		return nil, fmt.Errorf("%s: must not be empty", what)
	}
	segs := strings.Split(p, ".")
	if slices.Contains(segs, "") {
		return nil, fmt.Errorf("%s: %q has an empty path segment", what, p)
	}
	return segs, nil
}

// fieldSet returns keep or drop names sorted and deduplicated: they are a
// set, and a canonical order lets equal sets share a view key.
func fieldSet(what string, names []string) ([]string, error) {
	for _, n := range names {
		if n == "" {
			return nil, fmt.Errorf("%s: names must not be empty", what)
		}
		if strings.Contains(n, ".") {
			return nil, fmt.Errorf("%s: %q: fields acts on top-level keys only, not dotted paths", what, n)
		}
	}
	s := slices.Clone(names)
	slices.Sort(s)
	return slices.Compact(s), nil
}

// rateDuration converts rate seconds, refusing what no Duration can hold:
// less than a nanosecond, or 2^63 ns (about 292 years) and more. The bound
// is on the rounded float, so that no platform-dependent conversion of an
// out-of-range float decides. ParsePolicy applies the same rule.
func rateDuration(sec float64) (time.Duration, error) {
	ns := math.Round(sec * float64(time.Second))
	if !(sec > 0) || !(ns >= 1 && ns < 1<<63) {
		return 0, errors.New("seconds: must be a positive number")
	}
	return time.Duration(ns), nil
}

// decimalsOf counts the decimals of the shortest text that reads back as
// step: 0.1 → 1, 10 → 0, 0.25 → 2.
func decimalsOf(step float64) int {
	s := strconv.FormatFloat(step, 'f', -1, 64)
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return len(s) - i - 1
	}
	return 0
}

// writeConstraintKey appends the canonical text of one constraint to a view
// key. Strings are quoted and numbers written in their shortest exact form,
// so distinct constraints never render alike.
func writeConstraintKey(b *strings.Builder, c Constraint, op viewOp) {
	num := func(f float64) { b.WriteString(strconv.FormatFloat(f, 'g', -1, 64)) }
	b.WriteString(c.Kind)
	b.WriteByte('(')
	switch c.Kind {
	case ConstraintAccuracy:
		b.WriteString(strconv.Quote(c.Field))
		b.WriteByte(',')
		num(c.Step)
	case ConstraintGeo:
		b.WriteString(strconv.Quote(c.Lat))
		b.WriteByte(',')
		b.WriteString(strconv.Quote(c.Lon))
		b.WriteByte(',')
		num(c.Meters)
	case ConstraintRange:
		b.WriteString(strconv.Quote(c.Field))
		if c.Min != nil {
			b.WriteString(",min=")
			num(*c.Min)
		}
		if c.Max != nil {
			b.WriteString(",max=")
			num(*c.Max)
		}
	case ConstraintFields:
		if op.kind == opKeep {
			b.WriteString("keep=")
		} else {
			b.WriteString("drop=")
		}
		for i, n := range op.names {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(n))
		}
	case ConstraintPseudonymize:
		b.WriteString(strconv.Quote(c.Field))
	case ConstraintRate:
		num(c.Seconds)
	}
	b.WriteByte(')')
}

// Key identifies the view: equal keys rewrite equal payloads to equal bytes.
// It is the constraints' canonical text in order (rate included, so a key
// also fixes Rate), plus, when a pseudonymize constraint is present, a
// fingerprint of the owner's key (never the key).
func (v *View) Key() string { return v.key }

// Constraints returns the constraints v was compiled from, for a view kept
// outside the engine (the broker's state store) to be compiled again
// (Engine.ViewFor). They are shared: callers must not modify them.
func (v *View) Constraints() []Constraint { return v.cs }

// Rate is the minimum period between two messages to one requester; zero
// when unlimited. The caller enforces it per subscriber. With several rate
// constraints the longest period holds.
func (v *View) Rate() time.Duration { return v.rate }

// Rewrites reports whether Apply and Render change payloads at all. It is
// false when the view only rate-limits; callers may then skip them (and
// ParsePayload) and forward the payload as it is.
func (v *View) Rewrites() bool { return v.rewrites }

// ---------------------------------------------------------------------------
// Parse once, render per view.

// Payload is a parsed, validated payload: exactly one strict JSON object
// (Apply says what is refused), together with where every member of every
// addressable object lies. Addressable are the top-level object and, in
// turn, the objects that are member values of addressable ones: what a
// dotted path can reach (no path leads into an array). Render looks
// members up in this index instead of scanning the payload again. A payload
// with whitespace between tokens is compacted here, once, so that no Render
// has to.
//
// What ParsePayload allocates is much of its cost, so its Payload keeps the
// members encoded (index) rather than as fields, a few bytes each instead
// of forty; Render decodes the objects it looks into. Apply, which renders
// from the scratch it parsed into, uses the fields as they are.
//
// A Payload is immutable and safe for concurrent use: any number of
// goroutines may Render the same Payload, under the same or different
// views. It may keep a reference to the bytes it was parsed from; the
// caller must not modify them while the Payload is in use.
type Payload struct {
	raw    []byte     // the bytes as given: what a non-rewriting view forwards
	src    []byte     // the compact text: raw itself when raw has no whitespace
	fields []field    // while in scratch: members of the addressable objects, object by object
	index  []byte     // in a Payload of ParsePayload: the fields, encoded (see appendIndex)
	objs   []objSpan  // addressable objects in document order; objs[0] is the top level
	top    [1]objSpan // backs objs when the top-level object is the only one
	small  [40]byte   // backs index when it is short (a dozen members), saving an allocation
}

// field is one member of an addressable object. Offsets are into src. A
// field holds nothing that can be derived: src is compact, so the value
// starts right after the key's ':', and the decoded name of a key is
// between its quotes unless it has escapes. Those are rare, and Render
// decodes them when it compares them (see Payload.name).
type field struct {
	keyStart, keyEnd int // the key token, quotes included
	valEnd           int // the value is src[keyEnd+1:valEnd]
	child            int // the value's index in objs when it is an object, else -1
	escaped          bool
}

func (f *field) valStart() int { return f.keyEnd + 1 }

// objSpan locates an object, src[start] being its '{', and its n members:
// fields[first:first+n], or, once encoded, index[first:].
type objSpan struct{ start, first, n int }

// name returns the decoded key of f, a member of p, in buf when it has
// escapes.
func (p *Payload) name(f *field, buf *[]byte) []byte {
	name := p.src[f.keyStart+1 : f.keyEnd-1]
	if f.escaped {
		*buf = appendUnescaped((*buf)[:0], name)
		return *buf
	}
	return name
}

// nameIs reports whether the decoded key of f, a member of st.p, is s. It
// is how Render finds the members a view names, so the common case (no
// escapes, a different length) decides without looking at bytes.
func (st *scratch) nameIs(f *field, s string) bool {
	if f.escaped {
		return st.escapedNameIs(f, s)
	}
	return f.keyEnd-f.keyStart-2 == len(s) && string(st.p.src[f.keyStart+1:f.keyEnd-1]) == s
}

func (st *scratch) escapedNameIs(f *field, s string) bool {
	return string(st.p.name(f, &st.keyBuf)) == s
}

// memberList gives the members of one object of a Payload by index.
// Encoded members are decoded only as far as they are asked for: Render
// mostly looks up a few members near the front of an object.
type memberList struct {
	p    *Payload
	n    int     // the object's number of members
	fs   []field // the members decoded so far; all of them when p keeps fields
	buf  []field // backs fs when decoding, kept for the next object
	next int     // where the encoding of the member after fs starts in p.index
	end  int     // where the last member in fs ends, at first the object's '{'
}

// reset makes m the member list of objs[o] of p.
func (m *memberList) reset(p *Payload, o int) {
	s := p.objs[o]
	m.p, m.n = p, s.n
	if p.index == nil {
		m.fs = p.fields[s.first : s.first+s.n]
		return
	}
	m.fs, m.next, m.end = m.buf[:0], s.first, s.start
}

// at returns member k, k < m.n.
func (m *memberList) at(k int) *field {
	if k >= len(m.fs) {
		m.decodeThrough(k)
	}
	return &m.fs[k]
}

// decodeThrough decodes the members up to k from p.index (see appendIndex).
func (m *memberList) decodeThrough(k int) {
	ix, j, end := m.p.index, m.next, m.end
	fs := slices.Grow(m.fs, k+1-len(m.fs))
	for len(fs) <= k {
		// Every member takes three bytes at least, and usually exactly.
		kl, vl, c := uint64(ix[j]), uint64(ix[j+1]), uint64(ix[j+2])
		if kl|vl|c < 0x80 {
			j += 3
		} else {
			kl, j = uvarintAt(ix, j)
			vl, j = uvarintAt(ix, j)
			c, j = uvarintAt(ix, j)
		}
		// Written in place, as in parseObject, for the same reason.
		fs = fs[:len(fs)+1]
		f := &fs[len(fs)-1]
		f.keyStart = end + 1 // the '{', then each value, is followed by the next key
		f.keyEnd = f.keyStart + int(kl>>1)
		f.valEnd = f.valStart() + int(vl)
		f.child, f.escaped = int(c)-1, kl&1 == 1
		end = f.valEnd
	}
	m.fs, m.buf, m.next, m.end = fs, fs, j, end
}

// appendIndex appends the encoding of fs, the members of one object, that
// memberList decodes: per member the length of its key token (shifted
// left, with whether it has escapes in the low bit), of its value, and
// child+1, as uvarints. Readings have short keys and values, so that is
// usually three bytes a member.
func appendIndex(dst []byte, fs []field) []byte {
	for i := range fs {
		f := &fs[i]
		esc := uint64(0)
		if f.escaped {
			esc = 1
		}
		dst = appendUvarint(dst, uint64(f.keyEnd-f.keyStart)<<1|esc)
		dst = appendUvarint(dst, uint64(f.valEnd-f.valStart()))
		dst = appendUvarint(dst, uint64(f.child+1))
	}
	return dst
}

func appendUvarint(dst []byte, x uint64) []byte {
	if x < 0x80 {
		return append(dst, byte(x))
	}
	return binary.AppendUvarint(dst, x)
}

// uvarintAt decodes the uvarint appendIndex wrote at b[j], and returns the
// index after it.
func uvarintAt(b []byte, j int) (uint64, int) {
	x, n := binary.Uvarint(b[j:])
	return x, j + n
}

// payload copies the Payload parsed into st into memory of its own, with
// its members encoded; only raw, the caller's bytes, is shared. The
// compact text, when it differs from raw, and the index share one
// allocation.
func (st *scratch) payload() *Payload {
	p := &st.pl
	q := &Payload{raw: p.raw, src: p.raw}
	if len(p.objs) == 1 {
		q.objs = q.top[:]
	} else {
		q.objs = make([]objSpan, len(p.objs))
	}
	ix := st.index[:0]
	for o, s := range p.objs {
		q.objs[o] = objSpan{start: s.start, first: len(ix), n: s.n}
		ix = appendIndex(ix, p.fields[s.first:s.first+s.n])
	}
	st.index = ix
	compacted := len(p.src) != len(p.raw)
	if !compacted && len(ix) <= len(q.small) {
		q.index = q.small[:copy(q.small[:], ix):len(ix)]
		return q
	}
	n := len(ix)
	if compacted {
		n += len(p.src)
	}
	buf := make([]byte, n)
	if compacted {
		q.src = buf[:copy(buf, p.src):len(p.src)]
		buf = buf[len(p.src):]
	}
	copy(buf, ix)
	q.index = buf
	return q
}

// ParsePayload parses and validates b once, for any number of Render calls
// (a message fanned out to many subscribers in a few views is parsed once
// and rendered once per view). It fails, with an error wrapping ErrWithheld,
// exactly where Apply would fail for an invalid payload, with the same
// reason.
//
// The Payload may keep a reference to b: the caller must not modify b
// afterwards, as long as the Payload or a Render of it is in use.
func ParsePayload(b []byte) (*Payload, error) {
	st := getScratch()
	defer st.release()
	if err := st.parse(b); err != nil {
		return nil, err
	}
	return st.payload(), nil
}

// Render rewrites a parsed payload into a fresh slice, or returns an error
// wrapping ErrWithheld saying why the requester gets nothing. For a view
// that rewrites and every b, Render(ParsePayload(b)) gives what Apply(b)
// gives, byte for byte and error for error; see Apply for the rules.
// Render does not modify p and is safe for concurrent use on the same
// Payload.
//
// A view that does not rewrite (Rewrites is false) returns a copy of the
// bytes p was parsed from, as Apply does. A nil or zero Payload is
// withheld.
func (v *View) Render(p *Payload) ([]byte, error) {
	if p == nil || len(p.objs) == 0 {
		return nil, fmt.Errorf("%w: payload: not parsed", ErrWithheld)
	}
	if !v.rewrites {
		return append([]byte{}, p.raw...), nil
	}
	st := getScratch()
	defer st.release()
	return st.render(v, p)
}

// Apply rewrites payload into a fresh slice, or returns an error wrapping
// ErrWithheld saying why the requester gets nothing. It is ParsePayload
// followed by Render, without keeping the parse: when several views apply
// to one message, parse it once with ParsePayload and Render it per view.
//
// The constraints act in order, each on the result of the ones before (an
// accuracy on a field a previous fields{keep} removed finds it missing).
// Apply fails closed: a payload that is not exactly one valid JSON object
// (strict RFC 8259, valid UTF-8, no lone surrogate escapes), that has a
// duplicate key in any object (parsers disagree on which duplicate wins, so
// one could carry a raw value past a rewrite), that nests deeper than 64,
// or where a constrained field is missing or of the wrong type, is
// withheld. The reason names the field, never a value.
//
// The output is compact JSON in the payload's key order; every scalar no
// constraint touched keeps its exact original text (1e3 stays 1e3), only
// whitespace between tokens is dropped. A view that only rate-limits
// returns a copy of payload once it is found to be a JSON object: a
// delivery under any constraint is of a reading.
func (v *View) Apply(payload []byte) ([]byte, error) {
	st := getScratch()
	defer st.release()
	if err := st.parse(payload); err != nil {
		return nil, err
	}
	if !v.rewrites {
		return append([]byte{}, payload...), nil
	}
	return st.render(v, &st.pl)
}

// withheld builds the error Render returns: "withheld: lat: field missing".
func withheld(field, reason string) error {
	return fmt.Errorf("%w: %s: %s", ErrWithheld, field, reason)
}

// payloadError reports a structural problem of the payload at an offset.
func payloadError(reason string, off int) error {
	return fmt.Errorf("%w: payload: %s at offset %d", ErrWithheld, reason, off)
}

// edit replaces the value at src[start:end] with repl[off:end2].
type edit struct {
	start, end int
	off, end2  int
}

// scratch is the working memory of one ParsePayload, Render or Apply,
// pooled so that Apply and Render cost one allocation (their output) in the
// common case.
type scratch struct {
	// Parsing: the Payload is built here, in reused slices.
	pl    Payload
	open  []field   // members of the objects being parsed, innermost last
	names []keyName // their names, for duplicate detection
	keys  []byte    // decoded names of the open keys that have escapes
	shift int       // whitespace bytes skipped so far
	cbuf  []byte    // backs pl.src when the payload has whitespace
	index []byte    // the encoded fields, before they are copied out

	// Rendering: everything a view changes lives here, never in the Payload.
	p       *Payload
	top     memberList // the members of the top-level object of p
	sub     memberList // the members of a nested object of p
	dropped []bool     // top-level members removed, by index in top
	edits   []edit     // replaced values, non-overlapping
	repl    []byte     // replacement texts
	tmp     []byte     // scratch: a container rendered for its pseudonym
	tmp2    []byte     // scratch: canonical text for pseudonyms
	keyBuf  []byte     // scratch: the decoded name of a key with escapes
	sum     [sha256.Size]byte
}

// keyName locates the decoded name of a member being parsed: in keys when
// it has escapes, else in raw (the compact text is built only once the
// whole payload is valid). It is kept apart from the fields so that an
// object's fields move to the Payload in one copy.
type keyName struct {
	off, end int
	sig      uint64 // one bit from length and end bytes: a cheap inequality test
}

// keySig picks the bit of a key's signature. Keys with different bits
// differ, so duplicate detection compares bytes only when bits collide.
func keySig(k []byte) uint64 {
	h := uint(len(k))
	if len(k) > 0 {
		h = h*31 + uint(k[0])
		h = h*31 + uint(k[len(k)-1])
	}
	return 1 << (h & 63)
}

// openName returns the decoded name of open[j].
func (st *scratch) openName(j int) []byte {
	n := &st.names[j]
	if st.open[j].escaped {
		return st.keys[n.off:n.end]
	}
	return st.pl.raw[n.off:n.end]
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch {
	st := scratchPool.Get().(*scratch)
	st.keys = st.keys[:0]
	st.pl.fields = st.pl.fields[:0]
	st.pl.objs = st.pl.objs[:0]
	st.open = st.open[:0]
	st.names = st.names[:0]
	st.shift = 0
	st.cbuf = st.cbuf[:0]
	st.dropped = st.dropped[:0]
	st.edits = st.edits[:0]
	st.repl = st.repl[:0]
	st.tmp = st.tmp[:0]
	st.tmp2 = st.tmp2[:0]
	return st
}

// release returns the scratch to the pool unless a huge payload grew it.
func (st *scratch) release() {
	st.pl.raw, st.pl.src, st.p = nil, nil, nil // do not pin the caller's bytes
	st.top.p, st.top.fs, st.sub.p, st.sub.fs = nil, nil, nil, nil
	if cap(st.keys) > maxPooledBytes || cap(st.keyBuf) > maxPooledBytes || cap(st.cbuf) > maxPooledBytes || cap(st.index) > maxPooledBytes || cap(st.repl) > maxPooledBytes ||
		cap(st.tmp) > maxPooledBytes || cap(st.tmp2) > maxPooledBytes ||
		cap(st.pl.fields) > maxPooledItems || cap(st.pl.objs) > maxPooledItems || cap(st.open) > maxPooledItems || cap(st.names) > maxPooledItems ||
		cap(st.dropped) > maxPooledItems || cap(st.top.buf) > maxPooledItems || cap(st.sub.buf) > maxPooledItems || cap(st.edits) > maxPooledItems {
		return
	}
	scratchPool.Put(st)
}

// ---------------------------------------------------------------------------
// Parsing: one strict pass that validates the whole payload, rejects
// duplicate keys in every object and records the members of the
// addressable objects, with their offsets in the compact text.

// plain marks the bytes a JSON string may hold unescaped and undecoded:
// printable ASCII except the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainEnd returns the index of the first byte at or after b[i] that is not
// plain, or len(b). Strings are most of a payload, so it looks at eight
// bytes at a time.
func plainEnd(b []byte, i int) int {
	for ; len(b)-i >= 8; i += 8 {
		if m := notPlain(binary.LittleEndian.Uint64(b[i : i+8])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for i < len(b) && plain[b[i]] {
		i++
	}
	return i
}

// notPlain sets the high bit of the bytes of w (little-endian) that are not
// plain: '"', '\\', below 0x20 or from 0x80. The tests are the classic
// has-zero-byte ones, (x - 0x01…) &^ x, which may also flag a byte above a
// flagged one (through the borrow) but never one below: the lowest flag,
// the only one plainEnd reads, is exact.
func notPlain(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := w ^ (ones * '"')
	s := w ^ (ones * '\\')
	return ((q-ones)&^q | (s-ones)&^s | (w-ones*0x20)&^w | w) & highs
}

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// ws skips whitespace, counting it: an offset i of raw is i-shift in the
// compact text, since all whitespace before it went through ws.
func (st *scratch) ws(i int) int {
	b := st.pl.raw
	if i < len(b) && b[i] > ' ' { // most tokens follow each other directly
		return i
	}
	j := i
	for j < len(b) && isWS(b[j]) {
		j++
	}
	st.shift += j - i
	return j
}

// parse validates b into st.pl. Error offsets are offsets into b.
func (st *scratch) parse(b []byte) error {
	st.pl.raw = b
	i := st.ws(0)
	if i >= len(b) || b[i] != '{' {
		return fmt.Errorf("%w: payload: not a JSON object", ErrWithheld)
	}
	i, err := st.parseObject(i, 1, true)
	if err != nil {
		return err
	}
	if i = st.ws(i); i != len(b) {
		return payloadError("data after the object", i)
	}
	st.pl.src = b
	if st.shift > 0 {
		st.cbuf = appendCompact(st.cbuf[:0], b)
		st.pl.src = st.cbuf
	}
	return nil
}

// parseValue parses the value at b[i]; record says whether an object there
// is addressable.
func (st *scratch) parseValue(i, depth int, record bool) (int, error) {
	b := st.pl.raw
	if i >= len(b) {
		return i, payloadError("unexpected end", i)
	}
	switch c := b[i]; {
	case c == '{':
		return st.parseObject(i, depth+1, record)
	case c == '[':
		return st.parseArray(i, depth+1)
	case c == '"':
		if j := plainEnd(b, i+1); j < len(b) && b[j] == '"' {
			return j + 1, nil // the common case, as for keys
		}
		j, _, err := scanString(b, i)
		return j, err
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(b, i)
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	}
	return i, payloadError("invalid JSON", i)
}

func literal(b []byte, i int, lit string) (int, error) {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit), nil
	}
	return i, payloadError("invalid JSON", i)
}

func (st *scratch) parseArray(i, depth int) (int, error) {
	if depth > maxDepth {
		return i, payloadError("nesting too deep", i)
	}
	b := st.pl.raw
	i = st.ws(i + 1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = st.parseValue(i, depth, false); err != nil {
			return i, err
		}
		i = st.ws(i)
		if i >= len(b) {
			return i, payloadError("unexpected end", i)
		}
		switch b[i] {
		case ',':
			i = st.ws(i + 1)
		case ']':
			return i + 1, nil
		default:
			return i, payloadError("invalid JSON", i)
		}
	}
}

// parseObject parses the object at b[i] and rejects duplicate keys, compared
// decoded. An addressable object (record) gets the next slot of pl.objs,
// taken when it opens so that the slots follow the document order, and its
// members move to pl.fields when it closes. The keys of any other object
// are dropped when it closes: no path can reach them.
func (st *scratch) parseObject(i, depth int, record bool) (int, error) {
	if depth > maxDepth {
		return i, payloadError("nesting too deep", i)
	}
	b := st.pl.raw
	base, kbase := len(st.open), len(st.keys)
	slot := -1
	if record {
		slot = len(st.pl.objs)
		st.pl.objs = append(st.pl.objs, objSpan{start: i - st.shift, first: len(st.pl.fields)})
	}
	var seen map[string]struct{}
	var sigs uint64 // union of the signatures of this object's keys
	i = st.ws(i + 1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, payloadError("invalid JSON", i)
		}
		ks := i
		var err error
		esc := false
		// A key is most often plain to its closing quote; anything else
		// (escapes, multi-byte characters, errors) goes to scanString. Most
		// keys are shorter than a word, which is looked at here, without a
		// call.
		if i++; len(b)-i >= 8 {
			if m := notPlain(binary.LittleEndian.Uint64(b[i : i+8])); m != 0 {
				i += bits.TrailingZeros64(m) / 8
			} else {
				i = plainEnd(b, i+8)
			}
		} else {
			i = plainEnd(b, i)
		}
		if i < len(b) && b[i] == '"' {
			i++
		} else if i, esc, err = scanString(b, ks); err != nil {
			return i, err
		}
		// The field and name are written in place, every member: building
		// them in a variable and appending that stalls on the copy (store
		// forwarding), and was the most expensive spot of the parse.
		at := len(st.open)
		if at == cap(st.open) || at == cap(st.names) {
			st.open, st.names = slices.Grow(st.open, 1), slices.Grow(st.names, 1)
		}
		st.open, st.names = st.open[:at+1], st.names[:at+1]
		f, n := &st.open[at], &st.names[at]
		f.keyStart, f.keyEnd, f.valEnd, f.child, f.escaped = ks-st.shift, i-st.shift, 0, -1, esc
		n.off, n.end = ks+1, i-1
		name := b[n.off:n.end]
		if esc {
			off := len(st.keys)
			st.keys = appendUnescaped(st.keys, name)
			n.off, n.end = off, len(st.keys)
			name = st.keys[n.off:n.end]
		}
		n.sig = keySig(name)
		if seen != nil {
			if _, dup := seen[string(name)]; dup {
				return ks, payloadError("duplicate key", ks)
			}
			seen[string(name)] = struct{}{}
		} else {
			if sigs&n.sig != 0 {
				for j := base; j < at; j++ {
					if st.names[j].sig == n.sig && bytes.Equal(st.openName(j), name) {
						return ks, payloadError("duplicate key", ks)
					}
				}
			}
			sigs |= n.sig
			if at-base >= linearDupLimit {
				seen = make(map[string]struct{}, 2*linearDupLimit)
				for j := base; j < at; j++ {
					seen[string(st.openName(j))] = struct{}{}
				}
				seen[string(name)] = struct{}{}
			}
		}
		i = st.ws(i)
		if i >= len(b) || b[i] != ':' {
			return i, payloadError("invalid JSON", i)
		}
		i = st.ws(i + 1)
		child := -1
		if record && i < len(b) && b[i] == '{' {
			child = len(st.pl.objs) // the slot the object takes when it opens
		}
		if i, err = st.parseValue(i, depth, record); err != nil {
			return i, err
		}
		f = &st.open[at] // parseValue may have grown open
		f.valEnd, f.child = i-st.shift, child
		i = st.ws(i)
		if i >= len(b) {
			return i, payloadError("unexpected end", i)
		}
		switch b[i] {
		case ',':
			i = st.ws(i + 1)
		case '}':
			if record {
				st.pl.objs[slot].first, st.pl.objs[slot].n = len(st.pl.fields), len(st.open)-base
				st.pl.fields = append(st.pl.fields, st.open[base:]...)
			}
			st.open, st.names, st.keys = st.open[:base], st.names[:base], st.keys[:kbase]
			return i + 1, nil
		default:
			return i, payloadError("invalid JSON", i)
		}
	}
}

// appendCompact appends b, valid JSON, without the whitespace between
// tokens.
func appendCompact(dst, b []byte) []byte {
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			j := skipString(b, i)
			dst = append(dst, b[i:j]...)
			i = j
		case isWS(c):
			i++
		default:
			j := i + 1
			for j < len(b) && b[j] != '"' && !isWS(b[j]) {
				j++
			}
			dst = append(dst, b[i:j]...)
			i = j
		}
	}
	return dst
}

// scanString validates the JSON string at b[i] (the opening quote) and
// returns the index after its closing quote, and whether the string has
// escapes; appendUnescaped decodes those, and without them the bytes between
// the quotes are the decoded ones. It requires valid UTF-8 and rejects
// escapes of lone surrogates, which decoders turn into different things.
func scanString(b []byte, i int) (next int, escaped bool, err error) {
	i++
	for {
		i = plainEnd(b, i)
		if i >= len(b) {
			return i, escaped, payloadError("unterminated string", i)
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			_, n, err := readEscape(b, i)
			if err != nil {
				return i, escaped, err
			}
			i += n
		case c < 0x20:
			return i, escaped, payloadError("control character in string", i)
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size <= 1 {
				return i, escaped, payloadError("invalid UTF-8", i)
			}
			i += size
		}
	}
}

// readEscape reads the escape at b[i] (a backslash) inside a string: the
// rune it stands for and how many bytes it takes. A high surrogate escape
// must be followed by a low one; the pair is one rune.
func readEscape(b []byte, i int) (r rune, n int, err error) {
	if i+1 >= len(b) {
		return 0, 0, payloadError("unterminated string", i)
	}
	switch c := b[i+1]; c {
	case '"', '\\', '/':
		return rune(c), 2, nil
	case 'b':
		return '\b', 2, nil
	case 'f':
		return '\f', 2, nil
	case 'n':
		return '\n', 2, nil
	case 'r':
		return '\r', 2, nil
	case 't':
		return '\t', 2, nil
	case 'u':
		r = hex4(b, i+2)
		switch {
		case r < 0:
			return 0, 0, payloadError("invalid escape", i)
		case r >= 0xDC00 && r <= 0xDFFF:
			return 0, 0, payloadError("lone surrogate", i)
		case r >= 0xD800 && r <= 0xDBFF:
			lo := rune(-1)
			if i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
				lo = hex4(b, i+8)
			}
			if lo < 0xDC00 || lo > 0xDFFF {
				return 0, 0, payloadError("lone surrogate", i)
			}
			return utf16Decode(r, lo), 12, nil
		}
		return r, 6, nil
	}
	return 0, 0, payloadError("invalid escape", i)
}

// appendUnescaped appends the decoded text of s, what lies between the
// quotes of a valid string token.
func appendUnescaped(dst, s []byte) []byte {
	for {
		k := bytes.IndexByte(s, '\\')
		if k < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:k]...)
		r, n, _ := readEscape(s, k)
		dst = utf8.AppendRune(dst, r)
		s = s[k+n:]
	}
}

// hex4 reads four hex digits at b[i:], or returns -1.
func hex4(b []byte, i int) rune {
	if len(b)-i < 4 {
		return -1
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

func utf16Decode(hi, lo rune) rune { return (hi-0xD800)<<10 | (lo - 0xDC00) + 0x10000 }

// scanNumber validates the number at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, payloadError("invalid number", start)
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return i, payloadError("invalid number", start)
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return i, payloadError("invalid number", start)
		}
		i = j
	}
	return i, nil
}

// digits returns the end of the run of digits at b[i:], looking at eight
// bytes at a time while it can.
func digits(b []byte, i int) int {
	for ; len(b)-i >= 8; i += 8 {
		if m := notDigit(binary.LittleEndian.Uint64(b[i : i+8])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// notDigit sets the high bit of the bytes of w that are not ASCII digits:
// x+0x46 reaches 0x80 from ':' up, x-0x30 wraps below '0', and from 0xb0,
// where the sum carries out of the byte, x-0x30 has it. As in notPlain,
// carries and borrows only leave flagged bytes, so the lowest flag is
// exact.
func notDigit(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	return ((w + ones*0x46) | (w - ones*0x30)) & highs
}

// ---------------------------------------------------------------------------
// Navigation over the validated payload and the edits made so far.

// skipValue returns the end of the (valid) value at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// skipString returns the end of the (valid) string at b[i].
func skipString(b []byte, i int) int {
	for i++; ; i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// render prepares a rewrite of p under v and writes it into a fresh slice.
func (st *scratch) render(v *View, p *Payload) ([]byte, error) {
	st.p = p
	st.top.reset(p, 0)
	n := st.top.n
	st.dropped = slices.Grow(st.dropped[:0], n)[:n]
	clear(st.dropped)
	for i := range v.ops {
		if err := st.apply(v, &v.ops[i]); err != nil {
			return nil, err
		}
	}
	return st.emit(), nil
}

// lookup finds the member called name among ms, or returns nil.
func (st *scratch) lookup(ms *memberList, name string) *field {
	for k := range ms.n {
		if f := ms.at(k); st.nameIs(f, name) {
			return f
		}
	}
	return nil
}

// editAt returns the index of the edit replacing exactly src[vs:ve], or -1.
func (st *scratch) editAt(vs, ve int) int {
	for k, e := range st.edits {
		if e.start == vs && e.end == ve {
			return k
		}
	}
	return -1
}

// resolve finds the current value at a dotted path: the span it occupies in
// the payload and its text, which is an earlier rewrite's when one replaced
// it. reason is non-empty when the path does not lead to a value.
func (st *scratch) resolve(path []string) (vs, ve int, text []byte, reason string) {
	p := st.p
	var f *field
	for k := range st.top.n {
		if m := st.top.at(k); !st.dropped[k] && st.nameIs(m, path[0]) {
			f = m
			break
		}
	}
	if f == nil {
		return 0, 0, nil, "field missing"
	}
	for _, seg := range path[1:] {
		// Rewrites yield scalars, so a replaced value has no members.
		if f.child < 0 || st.editAt(f.valStart(), f.valEnd) >= 0 {
			return 0, 0, nil, "field missing (parent is not an object)"
		}
		st.sub.reset(p, f.child)
		if f = st.lookup(&st.sub, seg); f == nil {
			return 0, 0, nil, "field missing"
		}
	}
	vs, ve = f.valStart(), f.valEnd
	if k := st.editAt(vs, ve); k >= 0 {
		e := st.edits[k]
		return vs, ve, st.repl[e.off:e.end2], ""
	}
	return vs, ve, p.src[vs:ve], ""
}

// setEdit makes src[vs:ve] read as the text appended to repl since off,
// dropping edits inside the span, which the new text supersedes.
func (st *scratch) setEdit(vs, ve, off int) {
	if k := st.editAt(vs, ve); k >= 0 {
		st.edits[k].off, st.edits[k].end2 = off, len(st.repl)
		return
	}
	if st.hasEditInside(vs, ve) {
		st.edits = slices.DeleteFunc(st.edits, func(e edit) bool { return e.start >= vs && e.end <= ve })
	}
	st.edits = append(st.edits, edit{start: vs, end: ve, off: off, end2: len(st.repl)})
}

// isNumber reports whether text (a valid JSON value) is a number.
func isNumber(text []byte) bool { return text[0] == '-' || text[0] >= '0' && text[0] <= '9' }

// number parses a JSON number; overflow yields ±Inf, which callers treat as
// out of range.
func number(text []byte) float64 {
	if f, ok := shortDecimal(text); ok {
		return f
	}
	f, _ := strconv.ParseFloat(string(text), 64)
	return f
}

// exactPow10 holds the powers of ten shortDecimal divides by, all exact.
var exactPow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// shortDecimal converts a number without exponent and with at most 15
// digits, which readings almost always are, without ParseFloat's general
// machinery. Its digits as an integer and the power of ten are then exact
// float64s, and one division rounds correctly: the result is ParseFloat's.
func shortDecimal(text []byte) (float64, bool) {
	neg := text[0] == '-'
	if neg {
		text = text[1:]
	}
	if len(text) > 16 { // 15 digits and a '.'
		return 0, false
	}
	var m uint64
	dot := len(text)
	for k, c := range text {
		if d := c - '0'; d <= 9 {
			m = m*10 + uint64(d)
		} else if c == '.' {
			dot = k
		} else {
			return 0, false
		}
	}
	if dot == len(text) && len(text) > 15 {
		return 0, false
	}
	f := float64(m)
	if dot < len(text) {
		f /= exactPow10[len(text)-dot-1]
	}
	if neg {
		f = -f
	}
	return f, true
}

// ---------------------------------------------------------------------------
// Constraints.

func (st *scratch) apply(v *View, op *viewOp) error {
	switch op.kind {
	case opAccuracy:
		return st.accuracy(op)
	case opGeo:
		return st.geo(op)
	case opRange:
		_, _, text, reason := st.resolve(op.path)
		if reason != "" {
			return withheld(op.field, reason)
		}
		if !isNumber(text) {
			return withheld(op.field, "not a number")
		}
		if f := number(text); f < op.min || f > op.max {
			return withheld(op.field, "outside the allowed range")
		}
	case opKeep, opDrop:
		for k := range st.top.n {
			if listed(op.names, st.p.name(st.top.at(k), &st.keyBuf)) == (op.kind == opDrop) {
				st.dropped[k] = true
			}
		}
	case opPseudonymize:
		return st.pseudonymize(v, op)
	}
	return nil
}

// listed reports whether name is one of names (a handful: a loop beats a
// map and does not allocate).
func listed(names []string, name []byte) bool {
	for _, n := range names {
		if n == string(name) {
			return true
		}
	}
	return false
}

// accuracy rounds a number to the nearest multiple of step, written with the
// step's decimals so that float noise (21.400000000000002) cannot appear.
func (st *scratch) accuracy(op *viewOp) error {
	vs, ve, text, reason := st.resolve(op.path)
	if reason != "" {
		return withheld(op.field, reason)
	}
	if !isNumber(text) {
		return withheld(op.field, "not a number")
	}
	q := nearestMultiple(number(text), op.step)
	off := len(st.repl)
	if op.units > 0 && math.Abs(q) < float64(1<<53/op.units) {
		// Exact: q·step is the integer q·units shifted by the decimals.
		st.repl = appendFixed(st.repl, int64(q)*op.units, op.decimals)
	} else {
		r := q * op.step
		if math.IsInf(r, 0) || math.IsNaN(r) {
			return withheld(op.field, "number out of range")
		}
		if r == 0 {
			r = 0 // no "-0.0"
		}
		st.repl = strconv.AppendFloat(st.repl, r, 'f', op.decimals, 64)
	}
	st.setEdit(vs, ve, off)
	return nil
}

// nearestMultiple rounds x/step to an integer, half away from zero as people
// do with decimals: 23.45/0.1 is 234.49999999999997 in binary, so quotients
// within a few ulps of a half count as exactly half.
func nearestMultiple(x, step float64) float64 {
	q := x / step
	f := math.Floor(q)
	scale := math.Abs(q) // math.Max(1, |q|) without its call: q is never NaN
	if scale < 1 {
		scale = 1
	}
	if math.Abs(q-f-0.5) <= 1e-9*scale {
		if q >= 0 {
			return f + 1
		}
		return f
	}
	return math.Round(q)
}

// appendFixed writes n·10^-d with exactly d decimals: 214, 1 → "21.4".
func appendFixed(dst []byte, n int64, d int) []byte {
	if n < 0 {
		dst = append(dst, '-')
		n = -n
	}
	var buf [20]byte
	digs := strconv.AppendInt(buf[:0], n, 10)
	if d == 0 {
		return append(dst, digs...)
	}
	if len(digs) <= d {
		dst = append(dst, '0', '.')
		for range d - len(digs) {
			dst = append(dst, '0')
		}
		return append(dst, digs...)
	}
	dst = append(dst, digs[:len(digs)-d]...)
	dst = append(dst, '.')
	return append(dst, digs[len(digs)-d:]...)
}

// geo snaps a position to a grid of about op.meters. The longitude step is
// derived from the coarsened latitude so that it reveals nothing the
// coarsened latitude does not.
func (st *scratch) geo(op *viewOp) error {
	las, lae, lat, reason := st.resolve(op.path)
	if reason != "" {
		return withheld(op.field, reason)
	}
	los, loe, lon, reason := st.resolve(op.path2)
	if reason != "" {
		return withheld(op.field2, reason)
	}
	if !isNumber(lat) {
		return withheld(op.field, "not a number")
	}
	if !isNumber(lon) {
		return withheld(op.field2, "not a number")
	}
	la, lo := number(lat), number(lon)
	if la < -90 || la > 90 {
		return withheld(op.field, "latitude out of range")
	}
	if lo < -180 || lo > 180 {
		return withheld(op.field2, "longitude out of range")
	}
	step := op.meters / metersPerDegree
	la = snap(la, step, 90)
	// Near a pole a cell spans every longitude: they all snap to 0.
	lo2 := 0.0
	if c := math.Cos(la * math.Pi / 180); c > 1e-9 {
		if lstep := op.meters / (metersPerDegree * c); lstep < 360 {
			lo2 = snap(lo, lstep, 180)
		}
	}
	off := len(st.repl)
	st.repl = appendCoord(st.repl, la)
	st.setEdit(las, lae, off)
	off = len(st.repl)
	st.repl = appendCoord(st.repl, lo2)
	st.setEdit(los, loe, off)
	return nil
}

// snap rounds x to the nearest multiple of step within ±limit, at geo
// precision. A step that does not divide the limit could overshoot it; the
// limit itself is then the coarse value.
func snap(x, step, limit float64) float64 {
	r := math.Round(x/step) * step
	r = math.Max(-limit, math.Min(limit, r))
	r = math.Round(r*1e6) / 1e6
	if r == 0 {
		r = 0
	}
	return r
}

// appendCoord writes a coordinate with at most six decimals, trailing zeros
// trimmed.
func appendCoord(dst []byte, x float64) []byte {
	// 'f' always writes a '.' here, so trimming zeros stops there.
	dst = strconv.AppendFloat(dst, x, 'f', geoDecimals, 64)
	dst = bytes.TrimRight(dst, "0")
	return bytes.TrimSuffix(dst, []byte("."))
}

// pseudonymize replaces a value by "p_" + hex of the first 12 bytes of
// HMAC-SHA256(key, field + "\x00" + canonical text of the value).
func (st *scratch) pseudonymize(v *View, op *viewOp) error {
	vs, ve, text, reason := st.resolve(op.path)
	if reason != "" {
		return withheld(op.field, reason)
	}
	if c := text[0]; (c == '{' || c == '[') && st.hasEditInside(vs, ve) {
		// A container with rewritten members: hash what the requester
		// would otherwise have seen, so pseudonyms follow the same order
		// of constraints as everything else.
		st.tmp = st.renderSpan(st.tmp[:0], vs, ve)
		text = st.tmp
	}
	canon, _, err := appendCanonical(st.tmp2[:0], text, 0)
	st.tmp2 = canon
	if err != nil {
		return withheld(op.field, err.Error())
	}
	h := v.hmacs.Get().(hash.Hash)
	h.Reset()
	h.Write(op.prefix)
	h.Write(canon)
	sum := h.Sum(st.sum[:0])
	v.hmacs.Put(h)
	off := len(st.repl)
	st.repl = append(st.repl, `"p_`...)
	st.repl = hex.AppendEncode(st.repl, sum[:pseudonymBytes])
	st.repl = append(st.repl, '"')
	st.setEdit(vs, ve, off)
	return nil
}

func (st *scratch) hasEditInside(vs, ve int) bool {
	for _, e := range st.edits {
		if e.start >= vs && e.end <= ve {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// Output.

// sortEdits orders edits by position; there are few, so insertion sort.
func (st *scratch) sortEdits() {
	e := st.edits
	for i := 1; i < len(e); i++ {
		for j := i; j > 0 && e[j].start < e[j-1].start; j-- {
			e[j], e[j-1] = e[j-1], e[j]
		}
	}
}

// emit writes the rewritten object into a fresh slice sized so that it
// never grows: the output is at most the compact text plus the
// replacements.
func (st *scratch) emit() []byte {
	st.sortEdits()
	src := st.p.src
	if !slices.Contains(st.dropped, true) {
		// Nothing removed: the compact text is exactly the object, so
		// splice the edits into it in one pass, into a slice of exactly
		// the size it takes (an allocation is much of a Render's cost).
		n := len(src)
		for _, e := range st.edits {
			n += e.end2 - e.off - (e.end - e.start)
		}
		out, _ := st.appendSpan(make([]byte, 0, n), 0, len(src), 0)
		return out
	}
	out := make([]byte, 0, len(src)+len(st.repl)+2)
	out = append(out, '{')
	first := true
	k := 0
	for i := range st.top.n {
		if st.dropped[i] {
			continue
		}
		m := st.top.at(i)
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, src[m.keyStart:m.valStart()]...) // the key and its ':'
		out, k = st.appendSpan(out, m.valStart(), m.valEnd, k)
	}
	return append(out, '}')
}

// renderSpan writes the current text of src[vs:ve], edits applied.
func (st *scratch) renderSpan(dst []byte, vs, ve int) []byte {
	st.sortEdits()
	dst, _ = st.appendSpan(dst, vs, ve, 0)
	return dst
}

// appendSpan copies src[vs:ve] with the edits inside it applied, starting
// the search at edit k (edits sorted); it returns the next edit index.
func (st *scratch) appendSpan(dst []byte, vs, ve, k int) ([]byte, int) {
	src := st.p.src
	for k < len(st.edits) && st.edits[k].start < vs {
		k++
	}
	p := vs
	for ; k < len(st.edits) && st.edits[k].start < ve; k++ {
		e := st.edits[k]
		dst = append(dst, src[p:e.start]...)
		dst = append(dst, st.repl[e.off:e.end2]...)
		p = e.end
	}
	return append(dst, src[p:ve]...), k
}

// ---------------------------------------------------------------------------
// Canonical text, the input of pseudonyms. It is part of the output format:
// equal JSON values must hash alike however a device happens to write them.
//
//   - strings: decoded and re-encoded with only '"', '\\' and control
//     characters escaped (\b \f \n \r \t, others \u00xx), UTF-8 as is;
//   - numbers: the exact decimal value as [-]digits[e<exp>], with no leading
//     or trailing zeros in digits: 1000, 1e3 and 1000.0 all read "1e3",
//     40.20 reads "402e-1", -0 and 0.0 read "0";
//   - true, false, null as they are;
//   - arrays: elements in order; objects: members sorted by the bytes of
//     their decoded keys; both compact.

// appendCanonical appends the canonical text of the valid value at b[i] and
// returns the index after it.
func appendCanonical(dst, b []byte, i int) ([]byte, int, error) {
	i = skipWS(b, i)
	switch c := b[i]; {
	case c == '"':
		j := skipString(b, i)
		return appendCanonicalString(dst, b[i:j]), j, nil
	case c == '[':
		dst = append(dst, '[')
		i = skipWS(b, i+1)
		for n := 0; b[i] != ']'; n++ {
			if n > 0 {
				dst = append(dst, ',')
				i = skipWS(b, i+1) // ','
			}
			var err error
			if dst, i, err = appendCanonical(dst, b, i); err != nil {
				return dst, i, err
			}
			i = skipWS(b, i)
		}
		return append(dst, ']'), i + 1, nil
	case c == '{':
		type kv struct {
			key []byte
			val int
		}
		var kvs []kv
		i = skipWS(b, i+1)
		for b[i] != '}' {
			if b[i] == ',' {
				i = skipWS(b, i+1)
			}
			j, esc, _ := scanString(b, i)
			key := b[i+1 : j-1]
			if esc {
				key = appendUnescaped(nil, key)
			}
			i = skipWS(b, j)
			i = skipWS(b, i+1) // ':'
			kvs = append(kvs, kv{key, i})
			i = skipWS(b, skipValue(b, i))
		}
		end := i + 1
		slices.SortFunc(kvs, func(x, y kv) int { return bytes.Compare(x.key, y.key) })
		dst = append(dst, '{')
		for n, m := range kvs {
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = appendCanonicalKey(dst, m.key)
			dst = append(dst, ':')
			var err error
			if dst, _, err = appendCanonical(dst, b, m.val); err != nil {
				return dst, end, err
			}
		}
		return append(dst, '}'), end, nil
	case c == '-' || c >= '0' && c <= '9':
		j := skipValue(b, i)
		dst, err := appendCanonicalNumber(dst, b[i:j])
		return dst, j, err
	}
	j := skipValue(b, i) // true, false, null
	return append(dst, b[i:j]...), j, nil
}

// appendCanonicalString re-encodes the valid string token s.
func appendCanonicalString(dst, s []byte) []byte {
	if bytes.IndexByte(s, '\\') < 0 {
		return append(dst, s...) // nothing to decode, nothing to escape
	}
	return appendCanonicalKey(dst, appendUnescaped(nil, s[1:len(s)-1]))
}

// appendCanonicalKey encodes decoded string bytes canonically.
func appendCanonicalKey(dst, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// appendCanonicalNumber writes the exact decimal value of the valid number
// token s as [-]digits[e<exp>]. An exponent beyond ±10^15 is refused rather
// than computed in big integers: no reading carries one.
func appendCanonicalNumber(dst, s []byte) ([]byte, error) {
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	mant := s
	var exp int64
	if k := bytes.IndexAny(s, "eE"); k >= 0 {
		mant = s[:k]
		e := s[k+1:]
		eneg := e[0] == '-'
		if e[0] == '-' || e[0] == '+' {
			e = e[1:]
		}
		e = bytes.TrimLeft(e, "0")
		if len(e) > 15 {
			return dst, errors.New("number out of range")
		}
		for _, c := range e {
			exp = exp*10 + int64(c-'0')
		}
		if eneg {
			exp = -exp
		}
	}
	intPart, frac := mant, []byte(nil)
	if k := bytes.IndexByte(mant, '.'); k >= 0 {
		intPart, frac = mant[:k], mant[k+1:]
	}
	exp -= int64(len(frac))
	// The significant digits: integer and fraction digits together, without
	// leading zeros, trailing zeros moved into the exponent.
	start := len(dst)
	if neg {
		dst = append(dst, '-')
	}
	ds := len(dst)
	dst = append(dst, intPart...)
	dst = append(dst, frac...)
	digs := bytes.TrimLeft(dst[ds:], "0")
	n := len(digs)
	digs = bytes.TrimRight(digs, "0")
	exp += int64(n - len(digs))
	if len(digs) == 0 {
		return append(dst[:start], '0'), nil
	}
	dst = append(dst[:ds], digs...) // moves left within dst: append copies like memmove
	if exp != 0 {
		dst = append(dst, 'e')
		dst = strconv.AppendInt(dst, exp, 10)
	}
	return dst, nil
}
