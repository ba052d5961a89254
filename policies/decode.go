package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits of a policy document. They bound the work one retained config
// publish can cause, and keep error paths readable.
const (
	maxPolicySize     = 64 << 10 // bytes of the whole document
	maxPolicyIDLen    = 128      // characters of id
	maxConditionDepth = 32       // condition objects from when down to a leaf
	// maxJSONDepth bounds nesting while reading the generic tree, so a
	// hostile document cannot drive deep recursion. It is well above what
	// maxConditionDepth needs (two JSON levels per condition level), so a
	// too-deep condition is reported as such rather than as bad JSON.
	maxJSONDepth = 4*maxConditionDepth + 16
)

// Messages that several checks share, so the wording stays uniform.
const (
	msgRequired = "is required"
	msgNotEmpty = "must not be empty"
	msgString   = "must be a string"
	msgNumber   = "must be a number"
	msgArray    = "must be an array"
	msgObject   = "must be an object"
	msgPositive = "must be > 0"
	msgUnknown  = "unknown field"
	msgScalar   = "must be a string, number or boolean"
)

// ParsePolicy decodes and validates one policy document strictly: unknown
// fields, duplicate keys, wrong JSON types, missing required fields and
// trailing data are all errors, because a policy that silently means less
// than its owner wrote is a privacy leak. It reports every problem it finds
// at once, as a *ValidationError whose problems name JSON paths such as
// "constraints[1].step". On error the returned Policy is the zero value.
//
// A parsed policy marshals (encoding/json, struct tags) to a document that
// parses back to an equal Policy; that is the canonical form stores keep.
func ParsePolicy(data []byte) (Policy, error) {
	var w walker
	if len(data) > maxPolicySize {
		w.add("", fmt.Sprintf("document too large (%d bytes, max %d)", len(data), maxPolicySize))
		return Policy{}, w.probs.Err()
	}
	root, ok := readDocument(data, &w.probs)
	if !ok {
		return Policy{}, w.probs.Err()
	}
	p := w.policy(root)
	if err := w.probs.Err(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// ParseTime parses an RFC 3339 timestamp, with or without fractional
// seconds. The control plane uses it for relationship windows so that every
// config document spells time alike; its error text is meant to follow a
// field path ("valid_from: not an RFC 3339 time").
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errors.New("not an RFC 3339 time")
	}
	return t, nil
}

// ---------------------------------------------------------------------------
// Reading: bytes → generic tree.
//
// encoding/json's Unmarshal silently keeps the last of duplicate keys and
// loses key order, so the document is first read token by token into a tree
// that remembers both; the walker below then checks it with full paths.

// object is a decoded JSON object. Values are *object, []any, string,
// json.Number, bool or nil.
type object struct {
	keys []string // document order, first occurrence of each key
	vals map[string]any
}

func (o *object) get(key string) (any, bool) {
	v, ok := o.vals[key]
	return v, ok
}

func (o *object) has(key string) bool {
	_, ok := o.vals[key]
	return ok
}

// errTooDeep stops reading a document nested beyond maxJSONDepth.
var errTooDeep = errors.New("nested too deeply")

// readDocument reads data as exactly one JSON object. Duplicate keys and
// trailing data are recorded in probs but do not stop the read, so the
// walker can still report everything else; malformed JSON does.
func readDocument(data []byte, probs *Problems) (*object, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	r := treeReader{dec: dec, probs: probs}
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			probs.add("", "must be a JSON object")
		} else {
			probs.add("", syntaxMessage(err))
		}
		return nil, false
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		probs.add("", "must be a JSON object")
		return nil, false
	}
	root, err := r.object("", 1)
	if err != nil {
		// Duplicate keys read so far are beside the point of broken JSON.
		*probs = (*probs)[:0]
		if errors.Is(err, errTooDeep) {
			probs.add(r.deepPath, fmt.Sprintf("JSON nested too deeply (max %d levels)", maxJSONDepth))
		} else {
			probs.add("", syntaxMessage(err))
		}
		return nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		probs.add("", "unexpected data after the JSON object")
	}
	return root, true
}

// syntaxMessage words a decoder error for the document's author.
func syntaxMessage(err error) string {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, se.Error())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "invalid JSON: unexpected end of input"
	}
	return "invalid JSON: " + err.Error()
}

type treeReader struct {
	dec      *json.Decoder
	probs    *Problems
	deepPath string // where errTooDeep struck
}

// value reads the next value; its opening token, if any, is not yet read.
func (r *treeReader) value(path string, depth int) (any, error) {
	tok, err := r.dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	if depth >= maxJSONDepth {
		r.deepPath = path
		return nil, errTooDeep
	}
	if d == '{' {
		return r.object(path, depth+1)
	}
	return r.array(path, depth+1) // the decoder yields no other opening delimiter here
}

// object reads members after '{' through the closing '}'.
func (r *treeReader) object(path string, depth int) (*object, error) {
	o := &object{vals: map[string]any{}}
	for r.dec.More() {
		tok, err := r.dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string) // the decoder only yields strings as keys
		kp := keyPath(path, key)
		v, err := r.value(kp, depth)
		if err != nil {
			return nil, err
		}
		if o.has(key) {
			r.probs.add(kp, "duplicate key")
			continue
		}
		o.keys = append(o.keys, key)
		o.vals[key] = v
	}
	if _, err := r.dec.Token(); err != nil { // '}'
		return nil, err
	}
	return o, nil
}

// array reads elements after '[' through the closing ']'.
func (r *treeReader) array(path string, depth int) ([]any, error) {
	list := []any{}
	for r.dec.More() {
		v, err := r.value(indexPath(path, len(list)), depth)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	if _, err := r.dec.Token(); err != nil { // ']'
		return nil, err
	}
	return list, nil
}

// keyPath extends a JSON path by an object key. Keys that are not plain
// identifiers are quoted, so a path never reads ambiguously.
func keyPath(parent, key string) string {
	if !plainKey(key) {
		return parent + "[" + strconv.Quote(key) + "]"
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func plainKey(key string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func indexPath(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// ---------------------------------------------------------------------------
// Walking: tree → Policy, collecting every problem.

type walker struct {
	probs Problems
}

func (w *walker) add(path, msg string) { w.probs.add(path, msg) }

// only reports every key of o not in allowed, in document order.
func (w *walker) only(path string, o *object, allowed ...string) {
	for _, k := range o.keys {
		if !contains(allowed, k) {
			w.add(keyPath(path, k), msgUnknown)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// required returns o[key], reporting it missing if absent.
func (w *walker) required(path string, o *object, key string) (any, bool) {
	v, ok := o.get(key)
	if !ok {
		w.add(keyPath(path, key), msgRequired)
	}
	return v, ok
}

func (w *walker) str(path string, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		w.add(path, msgString)
	}
	return s, ok
}

// nonEmptyStr is a string field that must not be "".
func (w *walker) nonEmptyStr(path string, v any) (string, bool) {
	s, ok := w.str(path, v)
	if ok && s == "" {
		w.add(path, msgNotEmpty)
		return s, false
	}
	return s, ok
}

func (w *walker) num(path string, v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		w.add(path, msgNumber)
		return 0, false
	}
	f, ok := parseNumber(n)
	if !ok {
		w.add(path, "number out of range")
	}
	return f, ok
}

// parseNumber converts a JSON number to a finite float64.
func parseNumber(n json.Number) (float64, bool) {
	f, err := strconv.ParseFloat(string(n), 64)
	return f, err == nil && !math.IsInf(f, 0)
}

func (w *walker) positive(path string, v any) (float64, bool) {
	f, ok := w.num(path, v)
	if ok && f <= 0 {
		w.add(path, msgPositive)
		return f, false
	}
	return f, ok
}

func (w *walker) array(path string, v any) ([]any, bool) {
	list, ok := v.([]any)
	if !ok {
		w.add(path, msgArray)
	}
	return list, ok
}

// nonEmptyArray is an array field that must have at least one element.
func (w *walker) nonEmptyArray(path string, v any) ([]any, bool) {
	list, ok := w.array(path, v)
	if ok && len(list) == 0 {
		w.add(path, msgNotEmpty)
		return nil, false
	}
	return list, ok
}

func (w *walker) object(path string, v any) (*object, bool) {
	o, ok := v.(*object)
	if !ok {
		w.add(path, msgObject)
	}
	return o, ok
}

// names is a non-empty array of non-empty strings (purposes, keep, drop).
func (w *walker) names(path string, v any) []string {
	list, ok := w.nonEmptyArray(path, v)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(list))
	for i, x := range list {
		if s, ok := w.nonEmptyStr(indexPath(path, i), x); ok {
			out = append(out, s)
		}
	}
	return out
}

var policyFields = []string{"id", "description", "priority", "effect", "subjects", "resources", "actions", "purposes", "when", "constraints"}

func (w *walker) policy(o *object) Policy {
	var p Policy
	w.only("", o, policyFields...)

	if v, ok := w.required("", o, "id"); ok {
		if s, ok := w.str("id", v); ok {
			w.policyID(s)
			p.ID = s
		}
	}
	if v, ok := o.get("description"); ok {
		p.Description, _ = w.str("description", v)
	}
	if v, ok := w.required("", o, "priority"); ok {
		p.Priority, _ = w.priority("priority", v)
	}
	if v, ok := w.required("", o, "effect"); ok {
		if s, ok := w.str("effect", v); ok {
			if s != "allow" && s != "deny" {
				w.add("effect", fmt.Sprintf("unknown effect %q (want allow or deny)", s))
			}
			p.Effect = s
		}
	}
	if v, ok := w.required("", o, "subjects"); ok {
		p.Subjects = w.stringItems("subjects", v, w.subject)
	}
	if v, ok := w.required("", o, "resources"); ok {
		p.Resources = w.stringItems("resources", v, w.resource)
	}
	if v, ok := w.required("", o, "actions"); ok {
		for _, s := range w.stringItems("actions", v, w.action) {
			p.Actions = append(p.Actions, Action(s))
		}
	}
	if v, ok := o.get("purposes"); ok {
		p.Purposes = w.names("purposes", v)
	}
	if v, ok := o.get("when"); ok {
		if c, ok := w.condition("when", v, 1); ok {
			p.When = &c
		}
	}
	if v, ok := o.get("constraints"); ok {
		p.Constraints = w.constraints("constraints", v)
		if list, _ := v.([]any); len(list) > 0 && p.Effect == "deny" {
			w.add("constraints", "only allow policies may have constraints")
		}
	}
	return p
}

// policyID checks an id: it is the last level of the policy's config topic
// ($config/users/{owner}/policies/{id}), so it must be a plain topic level.
func (w *walker) policyID(s string) {
	switch n := utf8.RuneCountInString(s); {
	case n == 0:
		w.add("id", msgNotEmpty)
	case n > maxPolicyIDLen:
		w.add("id", fmt.Sprintf("must be at most %d characters", maxPolicyIDLen))
	}
	if strings.ContainsAny(s, "/+#\x00") || strings.IndexFunc(s, unicode.IsSpace) >= 0 {
		w.add("id", "must not contain '/', '+', '#', NUL or whitespace")
	}
}

// priority must be a JSON integer literal within int32, so a policy orders
// the same on every platform and no float rounding moves it.
func (w *walker) priority(path string, v any) (int, bool) {
	n, ok := v.(json.Number)
	if !ok {
		w.add(path, "must be an integer")
		return 0, false
	}
	i, err := strconv.ParseInt(string(n), 10, 32)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			w.add(path, fmt.Sprintf("must be between %d and %d", math.MinInt32, math.MaxInt32))
		} else {
			w.add(path, "must be an integer")
		}
		return 0, false
	}
	return int(i), true
}

// stringItems checks a required non-empty array of strings, validating each
// with check (which reports its own problems) and returning the good ones.
func (w *walker) stringItems(path string, v any, check func(path, s string) bool) []string {
	list, ok := w.nonEmptyArray(path, v)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(list))
	for i, x := range list {
		ip := indexPath(path, i)
		if s, ok := w.str(ip, x); ok && check(ip, s) {
			out = append(out, s)
		}
	}
	return out
}

const subjectForms = "want *, user:{name}, thing:{id}, role:{value}, relation:{owner|co_owner|installer|visitor} or a userset {type}:{id}#{relation}"

// subject checks one subject. As in the engine, a '#' makes a subject a
// userset whatever its type ("user:ruth#friend" is the userset of ruth's
// friends); role and relation are not object types, so they take none.
func (w *walker) subject(path, s string) bool {
	if s == "" {
		w.add(path, msgNotEmpty)
		return false
	}
	if s == "*" {
		return true
	}
	bad := func() bool {
		w.add(path, fmt.Sprintf("invalid subject %q (%s)", s, subjectForms))
		return false
	}
	typ, rest, ok := strings.Cut(s, ":")
	if !ok || typ == "" || rest == "" {
		return bad()
	}
	if id, rel, ok := strings.Cut(rest, "#"); ok {
		if typ == "role" || typ == "relation" || id == "" || rel == "" ||
			strings.Contains(rel, "#") || strings.IndexFunc(s, unicode.IsSpace) >= 0 {
			return bad()
		}
		return true
	}
	switch typ {
	case "user", "thing", "role":
		return true
	case "relation":
		if !Relation(rest).Valid() {
			w.add(path, fmt.Sprintf("unknown relation %q (want owner, co_owner, installer or visitor)", rest))
			return false
		}
		return true
	}
	return bad()
}

// resource checks one resource: a stream selector or an MQTT topic filter.
func (w *walker) resource(path, s string) bool {
	if s == "" {
		w.add(path, msgNotEmpty)
		return false
	}
	if name, ok := strings.CutPrefix(s, "stream:"); ok {
		if name == "" || strings.ContainsAny(name, "/+#\x00") {
			w.add(path, fmt.Sprintf("invalid stream %q (want stream:{name}, name non-empty without '/', '+' or '#')", s))
			return false
		}
		return true
	}
	if !ValidFilter(s) {
		w.add(path, "not a valid MQTT topic filter")
		return false
	}
	return true
}

func (w *walker) action(path, s string) bool {
	if !Action(s).Valid() {
		w.add(path, fmt.Sprintf("unknown action %q", s))
		return false
	}
	return true
}

// ---------------------------------------------------------------------------
// Conditions.

var conditionFields = []string{"all", "any", "not", "attr", "op", "value", "ref"}

// condition checks a condition object at depth (when is depth 1).
func (w *walker) condition(path string, v any, depth int) (Condition, bool) {
	var c Condition
	o, ok := w.object(path, v)
	if !ok {
		return c, false
	}
	if depth > maxConditionDepth {
		w.add(path, "conditions nested too deeply")
		return c, false
	}
	n := len(w.probs)
	w.only(path, o, conditionFields...)

	composite := 0
	for _, k := range []string{"all", "any", "not"} {
		if o.has(k) {
			composite++
		}
	}
	if composite == 0 {
		w.simpleCondition(path, o, &c)
		return c, len(w.probs) == n
	}
	if composite > 1 {
		w.add(path, "only one of all, any or not may be set")
	}
	for _, k := range []string{"attr", "op", "value", "ref"} {
		if o.has(k) {
			w.add(keyPath(path, k), "not allowed in a composite condition")
		}
	}
	if x, ok := o.get("all"); ok {
		c.All = w.conditionList(keyPath(path, "all"), x, depth)
	}
	if x, ok := o.get("any"); ok {
		c.Any = w.conditionList(keyPath(path, "any"), x, depth)
	}
	if x, ok := o.get("not"); ok {
		if kid, ok := w.condition(keyPath(path, "not"), x, depth+1); ok {
			c.Not = &kid
		}
	}
	return c, len(w.probs) == n
}

func (w *walker) conditionList(path string, v any, depth int) []Condition {
	list, ok := w.nonEmptyArray(path, v)
	if !ok {
		return nil
	}
	out := make([]Condition, 0, len(list))
	for i, x := range list {
		if kid, ok := w.condition(indexPath(path, i), x, depth+1); ok {
			out = append(out, kid)
		}
	}
	return out
}

const opList = "eq, ne, lt, le, gt, ge, in, between, prefix, contains"

func validOp(op Op) bool {
	switch op {
	case OpEq, OpNe, OpLt, OpLe, OpGt, OpGe, OpIn, OpBetween, OpPrefix, OpContains:
		return true
	}
	return false
}

func (w *walker) simpleCondition(path string, o *object, c *Condition) {
	if len(o.keys) == 0 {
		w.add(path, "must be a composite condition (all, any or not) or a simple one (attr, op and value or ref)")
		return
	}
	attrOK, opOK := false, false
	if x, ok := w.required(path, o, "attr"); ok {
		if s, ok := w.str(keyPath(path, "attr"), x); ok {
			c.Attr = s
			attrOK = w.attrPath(keyPath(path, "attr"), s)
		}
	}
	if x, ok := w.required(path, o, "op"); ok {
		if s, ok := w.str(keyPath(path, "op"), x); ok {
			c.Op = Op(s)
			if opOK = validOp(c.Op); !opOK {
				w.add(keyPath(path, "op"), fmt.Sprintf("unknown operator %q (want %s)", s, opList))
			}
		}
	}
	if attrOK && opOK {
		w.opApplies(keyPath(path, "op"), c.Attr, c.Op)
	}

	value, hasValue := o.get("value")
	ref, hasRef := o.get("ref")
	switch {
	case hasValue && hasRef:
		w.add(path, "only one of value or ref may be set")
	case !hasValue && !hasRef:
		w.add(path, "one of value or ref is required")
	}
	if hasRef {
		rp := keyPath(path, "ref")
		if s, ok := w.str(rp, ref); ok {
			c.Ref = s
			w.attrPath(rp, s)
		}
		if c.Op == OpIn || c.Op == OpBetween {
			w.add(rp, fmt.Sprintf("not allowed with operator %q", c.Op))
		}
	}
	if hasValue && opOK {
		literalAttr := ""
		if attrOK {
			literalAttr = c.Attr
		}
		c.Value = w.conditionValue(keyPath(path, "value"), literalAttr, c.Op, value)
	}
}

const attrForms = "want requester.{key}, thing.{key}, data.{thing}.{stream}.{field}, env.hour, env.weekday, env.time, request.purpose or request.action"

// attrPath checks an attribute path (the left side, or a ref).
func (w *walker) attrPath(path, s string) bool {
	if validAttrPath(s) {
		return true
	}
	w.add(path, fmt.Sprintf("invalid attribute path %q (%s)", s, attrForms))
	return false
}

func validAttrPath(s string) bool {
	head, rest, ok := strings.Cut(s, ".")
	if !ok || rest == "" {
		return false
	}
	switch head {
	case "requester", "thing":
		return true
	case "data":
		// thing and stream are topic levels; the field may itself contain
		// dots (a nested reading), but no part may be empty.
		parts := strings.Split(rest, ".")
		if len(parts) < 3 {
			return false
		}
		for _, p := range parts {
			if p == "" {
				return false
			}
		}
		return !strings.ContainsAny(parts[0]+parts[1], "/+#\x00")
	case "env":
		return rest == "hour" || rest == "weekday" || rest == "time"
	case "request":
		return rest == "purpose" || rest == "action"
	}
	return false
}

// opApplies rejects operators that cannot hold meaningfully for an
// environment attribute: the engine compares weekday names as strings, so
// ordering them would silently follow the alphabet, and the hour is a number.
func (w *walker) opApplies(path, attr string, op Op) {
	switch attr {
	case "env.weekday":
		if op != OpEq && op != OpNe && op != OpIn {
			w.add(path, fmt.Sprintf("operator %q does not apply to env.weekday (want eq, ne or in)", op))
		}
	case "env.hour", "env.time":
		if op == OpPrefix || op == OpContains {
			w.add(path, fmt.Sprintf("operator %q does not apply to %s", op, attr))
		}
	}
}

// conditionValue checks and converts a literal right side for op. attr is
// the (valid) left side, or "" when it is not known to be valid.
func (w *walker) conditionValue(path, attr string, op Op, v any) any {
	switch op {
	case OpEq, OpNe:
		x, ok := scalar(v)
		if !ok {
			w.add(path, msgScalar)
			return nil
		}
		w.literal(path, attr, op, x)
		return x
	case OpLt, OpLe, OpGt, OpGe:
		x, ok := scalar(v)
		if _, isBool := x.(bool); !ok || isBool {
			w.add(path, "must be a number or a string")
			return nil
		}
		w.literal(path, attr, op, x)
		return x
	case OpPrefix, OpContains:
		s, ok := w.str(path, v)
		if !ok {
			return nil
		}
		w.literal(path, attr, op, s)
		return s
	case OpIn:
		list, ok := w.nonEmptyArray(path, v)
		if !ok {
			return nil
		}
		out := make([]any, 0, len(list))
		for i, e := range list {
			ip := indexPath(path, i)
			x, ok := scalar(e)
			if !ok {
				w.add(ip, msgScalar)
				continue
			}
			w.literal(ip, attr, op, x)
			out = append(out, x)
		}
		return out
	case OpBetween:
		return w.between(path, attr, v)
	}
	return nil
}

// between is [low, high]: two numbers or two strings, low <= high in the
// order the engine compares them (numeric, or bytewise for strings).
func (w *walker) between(path, attr string, v any) any {
	const want = "must be an array of 2 numbers or 2 strings"
	list, ok := v.([]any)
	if !ok || len(list) != 2 {
		w.add(path, want)
		return nil
	}
	lo, ok1 := scalar(list[0])
	hi, ok2 := scalar(list[1])
	if !ok1 || !ok2 {
		w.add(path, want)
		return nil
	}
	ordered := false
	switch l := lo.(type) {
	case float64:
		h, ok := hi.(float64)
		if !ok {
			w.add(path, want)
			return nil
		}
		ordered = l <= h
	case string:
		h, ok := hi.(string)
		if !ok {
			w.add(path, want)
			return nil
		}
		ordered = l <= h
	default:
		w.add(path, want)
		return nil
	}
	// Bounds that can never match are reported as such; their order is
	// then beside the point.
	okLo := w.literal(indexPath(path, 0), attr, OpBetween, lo)
	okHi := w.literal(indexPath(path, 1), attr, OpBetween, hi)
	if okLo && okHi && !ordered {
		w.add(path, "lower bound must be <= upper bound")
	}
	return []any{lo, hi}
}

var weekdays = []string{"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}

// literal checks one literal against what attr can ever equal, so a
// condition that could never hold (hour 25, "Monday", "8:00") is an error
// rather than a silent deny. It reports whether x passed.
func (w *walker) literal(path, attr string, op Op, x any) bool {
	var msg string
	switch attr {
	case "env.hour":
		if f, ok := x.(float64); !ok || f != math.Trunc(f) || f < 0 || f > 23 {
			msg = "must be an hour, an integer from 0 to 23"
		}
	case "env.weekday":
		if s, ok := x.(string); !ok || !contains(weekdays, s) {
			msg = "must be a lowercase English day name (monday … sunday)"
		}
	case "env.time":
		if s, ok := x.(string); !ok || !validClock(s) {
			msg = `must be a time of day "HH:MM" (00:00 to 23:59)`
		}
	case "request.action":
		if op != OpEq && op != OpNe && op != OpIn {
			break
		}
		if s, ok := x.(string); !ok || !Action(s).Valid() {
			msg = "must be an action (publish, read, command, history or configure)"
		}
	}
	if msg != "" {
		w.add(path, msg)
		return false
	}
	return true
}

// validClock reports whether s is "HH:MM", 24-hour, as env.time renders.
func validClock(s string) bool {
	if len(s) != 5 || s[2] != ':' {
		return false
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s[:2] <= "23" && s[3:] <= "59"
}

// scalar converts a decoded JSON scalar to the kinds conditions compare:
// string, float64 or bool.
func scalar(v any) (any, bool) {
	switch x := v.(type) {
	case string, bool:
		return x, true
	case json.Number:
		return parseNumber(x)
	}
	return nil, false
}

// ---------------------------------------------------------------------------
// Constraints.

// constraintKinds lists each kind with the keys it takes besides "kind".
var constraintKinds = []struct {
	kind string
	keys []string
}{
	{ConstraintAccuracy, []string{"field", "step"}},
	{ConstraintGeo, []string{"lat", "lon", "meters"}},
	{ConstraintRange, []string{"field", "min", "max"}},
	{ConstraintFields, []string{"keep", "drop"}},
	{ConstraintPseudonymize, []string{"field"}},
	{ConstraintRate, []string{"seconds"}},
}

const kindList = "want accuracy, geo, range, fields, pseudonymize or rate"

// constraintKeys returns the keys of kind, and whether kind is known.
func constraintKeys(kind string) ([]string, bool) {
	for _, k := range constraintKinds {
		if k.kind == kind {
			return k.keys, true
		}
	}
	return nil, false
}

// anyConstraintKey reports whether key belongs to some kind.
func anyConstraintKey(key string) bool {
	for _, k := range constraintKinds {
		if contains(k.keys, key) {
			return true
		}
	}
	return false
}

// constraints checks the constraints array. An empty array means none and
// decodes to nil, which is what the canonical form (omitempty) writes back.
func (w *walker) constraints(path string, v any) []Constraint {
	list, ok := w.array(path, v)
	if !ok || len(list) == 0 {
		return nil
	}
	var out []Constraint
	rates := 0
	for i, x := range list {
		ip := indexPath(path, i)
		c, ok := w.constraint(ip, x)
		if !ok {
			continue
		}
		if c.Kind == ConstraintRate {
			if rates++; rates > 1 {
				w.add(ip, "at most one rate constraint is allowed")
			}
		}
		out = append(out, c)
	}
	return out
}

func (w *walker) constraint(path string, v any) (Constraint, bool) {
	var c Constraint
	o, ok := w.object(path, v)
	if !ok {
		return c, false
	}
	n := len(w.probs)
	kindKnown := false
	var keys []string
	if x, ok := w.required(path, o, "kind"); ok {
		if s, ok := w.str(keyPath(path, "kind"), x); ok {
			c.Kind = s
			if keys, kindKnown = constraintKeys(s); !kindKnown {
				w.add(keyPath(path, "kind"), fmt.Sprintf("unknown kind %q (%s)", s, kindList))
			}
		}
	}
	for _, k := range o.keys {
		switch {
		case k == "kind" || contains(keys, k):
		case !anyConstraintKey(k):
			w.add(keyPath(path, k), msgUnknown)
		case kindKnown:
			w.add(keyPath(path, k), "not allowed for kind "+c.Kind)
		}
	}
	if !kindKnown {
		return c, false
	}

	// field is a dotted path into the payload (lat, lon and field).
	field := func(key string) string {
		if x, ok := w.required(path, o, key); ok {
			if s, ok := w.nonEmptyStr(keyPath(path, key), x); ok {
				w.fieldPath(keyPath(path, key), s)
				return s
			}
		}
		return ""
	}
	positive := func(key string) float64 {
		if x, ok := w.required(path, o, key); ok {
			f, _ := w.positive(keyPath(path, key), x)
			return f
		}
		return 0
	}
	bound := func(key string) *float64 {
		if x, ok := o.get(key); ok {
			if f, ok := w.num(keyPath(path, key), x); ok {
				return &f
			}
		}
		return nil
	}

	switch c.Kind {
	case ConstraintAccuracy:
		c.Field = field("field")
		c.Step = positive("step")
		// NewView's rule: a finer step is a typo or a float artefact
		// (0.1+0.2 = 0.30000000000000004), not a coarsening.
		if d := decimalsOf(c.Step); c.Step > 0 && d > maxStepDecimals {
			w.add(keyPath(path, "step"), fmt.Sprintf("must have at most %d decimals (has %d)", maxStepDecimals, d))
		}
	case ConstraintGeo:
		c.Lat = field("lat")
		c.Lon = field("lon")
		if c.Lat != "" && c.Lat == c.Lon {
			w.add(keyPath(path, "lon"), "must differ from lat")
		}
		c.Meters = positive("meters")
	case ConstraintRange:
		c.Field = field("field")
		c.Min, c.Max = bound("min"), bound("max")
		switch {
		case !o.has("min") && !o.has("max"):
			w.add(path, "one of min or max is required")
		case c.Min != nil && c.Max != nil && *c.Min > *c.Max:
			w.add(keyPath(path, "min"), "must be <= max")
		}
	case ConstraintFields:
		keep, hasKeep := o.get("keep")
		drop, hasDrop := o.get("drop")
		switch {
		case hasKeep && hasDrop:
			w.add(path, "only one of keep or drop may be set")
		case !hasKeep && !hasDrop:
			w.add(path, "one of keep or drop is required")
		}
		if hasKeep {
			c.Keep = w.fieldNames(keyPath(path, "keep"), keep)
		}
		if hasDrop {
			c.Drop = w.fieldNames(keyPath(path, "drop"), drop)
		}
	case ConstraintPseudonymize:
		c.Field = field("field")
	case ConstraintRate:
		c.Seconds = positive("seconds")
		if _, err := rateDuration(c.Seconds); c.Seconds > 0 && err != nil {
			if c.Seconds < 1 {
				w.add(keyPath(path, "seconds"), "too short: rounds to zero nanoseconds")
			} else {
				w.add(keyPath(path, "seconds"), "too long: must be below about 292 years (9.2e9 seconds)")
			}
		}
	}
	return c, len(w.probs) == n
}

// fieldPath checks a dotted path into a payload ("position.lat") as NewView
// splits it: no segment may be empty.
func (w *walker) fieldPath(path, s string) {
	if _, err := splitPath("", s); err != nil {
		w.add(path, fmt.Sprintf("invalid field path %q: empty segment (want names joined by single dots, like position.lat)", s))
	}
}

// fieldNames is the keep or drop list of a fields constraint: names (a
// non-empty array of non-empty strings) that are top-level keys, since
// fields does not reach into nested objects and NewView refuses a dotted
// name rather than let a drop silently miss.
func (w *walker) fieldNames(path string, v any) []string {
	list, ok := w.nonEmptyArray(path, v)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(list))
	for i, x := range list {
		ip := indexPath(path, i)
		s, ok := w.nonEmptyStr(ip, x)
		if !ok {
			continue
		}
		if strings.Contains(s, ".") {
			w.add(ip, "must be a top-level field name (no dots)")
			continue
		}
		out = append(out, s)
	}
	return out
}
