package policies

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

type subjectKind uint8

const (
	subjAny subjectKind = iota + 1
	subjUser
	subjThing
	subjRole
	subjRelation
	subjUserset
)

type subject struct {
	kind  subjectKind
	value string
}

// String is the subject as a policy names it.
func (s subject) String() string {
	switch s.kind {
	case subjAny:
		return "*"
	case subjUser:
		return "user:" + s.value
	case subjThing:
		return "thing:" + s.value
	case subjRole:
		return "role:" + s.value
	case subjRelation:
		return "relation:" + s.value
	}
	return s.value // a userset keeps the whole of it
}

func parseSubject(s string) (subject, bool) {
	if s == "*" {
		return subject{kind: subjAny}, true
	}
	kind, value, ok := strings.Cut(s, ":")
	if !ok || value == "" || kind == "" {
		return subject{}, false
	}
	if strings.Contains(value, "#") {
		id, rel, _ := strings.Cut(value, "#")
		if id == "" || rel == "" {
			return subject{}, false
		}
		return subject{kind: subjUserset, value: s}, true
	}
	switch kind {
	case "user":
		return subject{kind: subjUser, value: value}, true
	case "thing":
		return subject{kind: subjThing, value: value}, true
	case "role":
		return subject{kind: subjRole, value: value}, true
	case "relation":
		if !Relation(value).Valid() {
			return subject{}, false
		}
		return subject{kind: subjRelation, value: value}, true
	}
	return subject{}, false
}

// resource is a compiled policy resource: a topic filter, or a stream name
// matching that stream's data topic on any of the owner's things.
type resource struct {
	filter string
	stream string
	// prefix is the filter's levels before its first wildcard (all of it
	// when it has none): a topic the filter matches begins with it, so
	// most policies of an owner are rejected by one comparison.
	prefix string
}

// String is the resource as a policy names it.
func (r resource) String() string {
	if r.stream != "" {
		return "stream:" + r.stream
	}
	return r.filter
}

func (r resource) matches(topic string, res Resource) bool {
	if r.stream != "" {
		return res.Kind == ResData && res.Name == r.stream
	}
	return strings.HasPrefix(topic, r.prefix) && MatchTopic(r.filter, topic)
}

// literalPrefix is filter up to (not including the '/' before) its first
// '+' or '#' level.
func literalPrefix(filter string) string {
	for i := 0; ; {
		level, _, more := strings.Cut(filter[i:], "/")
		if level == "+" || level == "#" {
			return filter[:max(i-1, 0)]
		}
		if !more {
			return filter
		}
		i += len(level) + 1
	}
}

// overlaps reports whether the resource could match a topic the filter matches.
func (r resource) overlaps(filter string) bool {
	if r.stream != "" {
		return FiltersOverlap(filter, "things/+/data/"+r.stream)
	}
	return FiltersOverlap(r.filter, filter)
}

// compiled is a policy ready for evaluation. It keeps no copy of the
// Policy it came from (Policies puts one back together, see source): a
// loaded population's policies are what the garbage collector scans on
// every cycle, and a Policy is a score of pointers, most of them to what
// the compiled parts already hold in another form. Its pointers come
// first, so that a collection scans no further than srcWhen and extra.
type compiled struct {
	owner     string
	id        string
	subjects  []subject
	resources []resource
	purposes  []string
	when      *cond
	view      *View
	srcWhen   *Condition    // p.When as given (shared by equal conditions in a Load)
	extra     *policyExtras // nil unless p has a description or constraints, or actions order cannot hold
	priority  int
	order     uint64 // p.Actions in order, a nibble each (index in Actions + 1); see extra.actions
	actions   uint8  // bit per Action
	allow     bool
	nils      uint8 // which of p's Subjects, Resources and Actions were nil rather than empty
}

// policyExtras is what of a Policy evaluation does not need, for the few
// policies that have any.
type policyExtras struct {
	description string
	constraints []Constraint
	actions     []Action // p.Actions, when they are over 16 (repeated)
}

const (
	nilSubjects uint8 = 1 << iota
	nilResources
	nilActions
)

func actionBit(a Action) uint8 {
	for i, x := range Actions {
		if x == a {
			return 1 << i
		}
	}
	return 0
}

func compilePolicy(owner string, p Policy, key []byte) (*compiled, error) {
	return compilePacked(owner, p, key, nil)
}

// compilePacked compiles p; with a packer (a bulk Load), the policy's
// strings, slices and compiled parts are carved from the packer's blocks.
func compilePacked(owner string, p Policy, key []byte, pk *packer) (*compiled, error) {
	if p.Effect != "allow" && p.Effect != "deny" {
		return nil, fmt.Errorf("policy %q: effect must be allow or deny", p.ID)
	}
	if p.ID == "" {
		return nil, fmt.Errorf("policy id must not be empty")
	}
	c := &compiled{}
	str := func(s string) string { return s }
	if pk != nil {
		str = pk.str
		owner, p.ID, p.Description, p.Purposes = pk.str(owner), pk.str(p.ID), pk.str(p.Description), pk.strList(p.Purposes)
		c = &pk.compiled.take(1)[0]
		c.subjects, c.resources = pk.subjects.take(len(p.Subjects))[:0], pk.resources.take(len(p.Resources))[:0]
	}
	c.owner, c.id, c.priority, c.allow, c.purposes = owner, p.ID, p.Priority, p.Effect == "allow", p.Purposes
	for _, s := range p.Subjects {
		sub, ok := parseSubject(str(s))
		if !ok {
			return nil, fmt.Errorf("policy %q: invalid subject %q", p.ID, s)
		}
		c.subjects = append(c.subjects, sub)
	}
	for _, r := range p.Resources {
		if stream, ok := strings.CutPrefix(r, "stream:"); ok {
			if stream == "" {
				return nil, fmt.Errorf("policy %q: invalid resource %q (want stream:{name})", p.ID, r)
			}
			c.resources = append(c.resources, resource{stream: str(stream)})
			continue
		}
		if !ValidFilter(r) {
			return nil, fmt.Errorf("policy %q: invalid resource %q", p.ID, r)
		}
		r = str(r)
		c.resources = append(c.resources, resource{filter: r, prefix: literalPrefix(r)})
	}
	for i, a := range p.Actions {
		b := actionBit(a)
		if b == 0 {
			return nil, fmt.Errorf("policy %q: unknown action %q", p.ID, a)
		}
		c.actions |= b
		if i < 16 {
			c.order |= uint64(bits.TrailingZeros8(b)+1) << (4 * i)
		}
	}
	if p.Subjects == nil {
		c.nils |= nilSubjects
	}
	if p.Resources == nil {
		c.nils |= nilResources
	}
	if p.Actions == nil {
		c.nils |= nilActions
	}
	if p.Description != "" || p.Constraints != nil || len(p.Actions) > 16 {
		if pk != nil {
			c.extra = &pk.extras.take(1)[0]
		} else {
			c.extra = &policyExtras{}
		}
		c.extra.description, c.extra.constraints = p.Description, p.Constraints
		if len(p.Actions) > 16 {
			c.extra.actions = slices.Clone(p.Actions)
		}
	}
	if p.When != nil {
		var ok bool
		if pk != nil {
			c.srcWhen, c.when, ok = pk.cond(p.When)
		} else {
			var w cond
			w, ok = compileCond(p.When)
			c.srcWhen, c.when = p.When, &w
		}
		if !ok {
			return nil, fmt.Errorf("policy %q: invalid condition", p.ID)
		}
	}
	if len(p.Constraints) > 0 {
		v, err := NewView(key, p.Constraints)
		if err != nil {
			return nil, fmt.Errorf("policy %q: %w", p.ID, err)
		}
		c.view = v
		if pk != nil {
			c.view, c.extra.constraints = pk.view(v, p.Constraints)
		}
	}
	return c, nil
}

// source puts back together the Policy c was compiled from, equal to it
// field by field, and the caller's to change: nothing in it is shared with
// the engine (Purposes is what evaluation reads) or with other policies
// (equal conditions and constraints are one after a Load).
func (c *compiled) source() Policy {
	p := Policy{ID: c.id, Priority: c.priority, Effect: "deny", Purposes: slices.Clone(c.purposes), When: cloneCondition(c.srcWhen)}
	if c.allow {
		p.Effect = "allow"
	}
	if c.nils&nilSubjects == 0 {
		p.Subjects = make([]string, len(c.subjects))
		for i, s := range c.subjects {
			p.Subjects[i] = s.String()
		}
	}
	if c.nils&nilResources == 0 {
		p.Resources = make([]string, len(c.resources))
		for i, r := range c.resources {
			p.Resources[i] = r.String()
		}
	}
	if c.extra != nil {
		p.Description, p.Constraints = c.extra.description, cloneConstraints(c.extra.constraints)
		p.Actions = slices.Clone(c.extra.actions)
	}
	if p.Actions == nil && c.nils&nilActions == 0 {
		p.Actions = []Action{}
		for o := c.order; o != 0; o >>= 4 {
			p.Actions = append(p.Actions, Actions[o&0xf-1])
		}
	}
	return p
}

// applies reports whether the policy covers the action, purpose and resource.
func (c *compiled) applies(req *Request, res Resource) bool {
	if c.actions&actionBit(req.Action) == 0 {
		return false
	}
	if len(c.purposes) > 0 && !slices.Contains(c.purposes, req.Purpose) {
		return false
	}
	for _, r := range c.resources {
		if r.matches(req.Topic, res) {
			return true
		}
	}
	return false
}

// comparePolicies orders by ascending priority, then id, then owner.
func comparePolicies(a, b *compiled) int {
	return cmp.Or(cmp.Compare(a.priority, b.priority), strings.Compare(a.id, b.id), strings.Compare(a.owner, b.owner))
}

// packer lays out what a bulk Load keeps, so that a large population is a
// few large blocks rather than millions of small heap objects, each of
// which every garbage collection cycle would find and mark again: strings
// are copied (once per distinct value) into shared arenas, the slices of
// items, policies and compiled policies are carved from blocks, and equal
// conditions are compiled once and shared. A packer is used by one Load
// and dropped with its dedup tables; what it handed out is immutable.
type packer struct {
	strs      map[string]string
	arena     strings.Builder // the current arena; full ones live on through their strings
	strings   block[string]
	subjects  block[subject]
	resources block[resource]
	compiled  block[compiled]
	extras    block[policyExtras]
	conds     map[string]packedCond
	attrSets  map[string]Attributes
	views     map[string][]packedView
	lists     map[string][]string
}

type packedCond struct {
	src *Condition
	c   *cond
}

const arenaSize = 64 << 10

func newPacker() *packer {
	return &packer{strs: map[string]string{}, conds: map[string]packedCond{},
		attrSets: map[string]Attributes{}, lists: map[string][]string{}, views: map[string][]packedView{}}
}

// attrs returns normalized attributes a, or the earlier item's equal to
// them: a population's attributes take few distinct values (roles,
// levels), and each map is a few hundred bytes the collector scans.
func (pk *packer) attrs(a Attributes) Attributes {
	if len(a) == 0 {
		return a
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(a)) {
		b.WriteString(strconv.Quote(k))
		if !scalarKey(&b, a[k]) {
			return a
		}
	}
	if v, ok := pk.attrSets[b.String()]; ok {
		return v
	}
	out := make(Attributes, len(a))
	for k, v := range a {
		if s, ok := v.(string); ok {
			v = pk.str(s)
		}
		out[pk.str(k)] = v
	}
	pk.attrSets[b.String()] = out
	return out
}

func cloneCondition(w *Condition) *Condition {
	if w == nil {
		return nil
	}
	c := *w
	c.Not = cloneCondition(w.Not)
	c.All, c.Any = cloneConditions(w.All), cloneConditions(w.Any)
	if l, ok := w.Value.([]any); ok {
		c.Value = slices.Clone(l)
	}
	return &c
}

func cloneConditions(l []Condition) []Condition {
	if l == nil {
		return nil
	}
	out := make([]Condition, len(l))
	for i := range l {
		out[i] = *cloneCondition(&l[i])
	}
	return out
}

func cloneConstraints(cs []Constraint) []Constraint {
	if cs == nil {
		return nil
	}
	out := slices.Clone(cs)
	for i := range out {
		c := &out[i]
		if c.Min != nil {
			c.Min = new(*c.Min)
		}
		if c.Max != nil {
			c.Max = new(*c.Max)
		}
		c.Keep, c.Drop = slices.Clone(c.Keep), slices.Clone(c.Drop)
	}
	return out
}

// packedView is a view and the constraints it was compiled from.
type packedView struct {
	v  *View
	cs []Constraint
}

// view returns v and cs, or an earlier policy's equal view and constraints:
// owners often give the same constraints (a doctor sees locations to
// 0.01°). Views with equal keys render alike; the constraints are compared
// as well, so that Policies reads each policy back exactly as it was. A
// pseudonymizing view is its owner's alone: its key names the owner's key
// by a fingerprint only.
func (pk *packer) view(v *View, cs []Constraint) (*View, []Constraint) {
	if v.hmacs != nil {
		return v, cs
	}
	for _, pv := range pk.views[v.Key()] {
		if reflect.DeepEqual(pv.cs, cs) {
			return pv.v, pv.cs
		}
	}
	pk.views[v.Key()] = append(pk.views[v.Key()], packedView{v, cs})
	return v, cs
}

// sharedList is strList for a list many items have alike (a thing's
// streams): equal lists are one.
func (pk *packer) sharedList(list []string) []string {
	if len(list) == 0 {
		return pk.strList(list)
	}
	var b strings.Builder
	for _, s := range list {
		b.WriteString(strconv.Quote(s))
	}
	if v, ok := pk.lists[b.String()]; ok {
		return v
	}
	v := pk.strList(list)
	pk.lists[b.String()] = v
	return v
}

// str returns s's copy in an arena.
func (pk *packer) str(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := pk.strs[s]; ok {
		return v
	}
	if pk.arena.Cap()-pk.arena.Len() < len(s) {
		pk.arena = strings.Builder{}
		pk.arena.Grow(max(arenaSize, len(s)))
	}
	// The arena never grows past the capacity it started with, so what
	// String returned before stays where it is.
	start := pk.arena.Len()
	pk.arena.WriteString(s)
	v := pk.arena.String()[start:]
	pk.strs[v] = v
	return v
}

// strs copies a list of strings; nil stays nil.
func (pk *packer) strList(list []string) []string {
	if list == nil {
		return nil
	}
	out := pk.strings.take(len(list))
	for i, s := range list {
		out[i] = pk.str(s)
	}
	return out
}

// cond compiles w, or returns the earlier policy's condition equal to it
// (both its source and its compiled form).
func (pk *packer) cond(w *Condition) (*Condition, *cond, bool) {
	var b strings.Builder
	key := condKey(&b, w, 0)
	if key {
		if pc, ok := pk.conds[b.String()]; ok {
			return pc.src, pc.c, true
		}
	}
	c, ok := compileCond(w)
	if !ok {
		return w, nil, false
	}
	if key {
		pk.conds[b.String()] = packedCond{src: w, c: &c}
	}
	return w, &c, true
}

// condKey writes an encoding of every field of c, so that equal keys mean
// equal conditions; false when a value is of a kind it does not encode.
func condKey(b *strings.Builder, c *Condition, depth int) bool {
	if depth > 32 {
		return false
	}
	list := func(tag byte, l []Condition) bool {
		if l == nil {
			b.WriteByte('-')
			return true
		}
		b.WriteByte(tag)
		b.WriteString(strconv.Itoa(len(l)))
		for i := range l {
			if !condKey(b, &l[i], depth+1) {
				return false
			}
		}
		return true
	}
	b.WriteByte('(')
	if !list('A', c.All) || !list('Y', c.Any) {
		return false
	}
	if c.Not == nil {
		b.WriteByte('-')
	} else if b.WriteByte('N'); !condKey(b, c.Not, depth+1) {
		return false
	}
	b.WriteString(strconv.Quote(c.Attr))
	b.WriteString(strconv.Quote(string(c.Op)))
	b.WriteString(strconv.Quote(c.Ref))
	if l, ok := c.Value.([]any); ok {
		if l == nil {
			b.WriteString("Ln")
		}
		b.WriteString("L" + strconv.Itoa(len(l)))
		for _, v := range l {
			if !scalarKey(b, v) {
				return false
			}
		}
	} else if !scalarKey(b, c.Value) {
		return false
	}
	b.WriteByte(')')
	return true
}

func scalarKey(b *strings.Builder, v any) bool {
	switch v := v.(type) {
	case nil:
		b.WriteByte('n')
	case string:
		b.WriteString("s" + strconv.Quote(v))
	case float64:
		b.WriteString("f" + strconv.FormatUint(math.Float64bits(v), 16))
	case bool:
		b.WriteString("b" + strconv.FormatBool(v))
	default:
		return false
	}
	return true
}

// block hands out slices carved from larger blocks. A handed-out slice has
// no spare capacity, so appending to it copies.
type block[T any] struct {
	free []T
	size int // of the last block carved
}

// Blocks grow from firstBlockLen to blockLen elements: a household's Load
// keeps a few kilobytes, where 4,096-element blocks of every kind held
// megabytes of empty slots that every garbage collection scanned; a
// population's Load still comes to a few large blocks.
const (
	firstBlockLen = 64
	blockLen      = 4096
)

func (bl *block[T]) take(n int) []T {
	if n == 0 {
		return make([]T, 0)
	}
	if len(bl.free) < n {
		if n > blockLen/4 {
			return make([]T, n)
		}
		bl.size = max(min(bl.size*2, blockLen), firstBlockLen, n)
		bl.free = make([]T, bl.size)
	}
	s := bl.free[:n:n]
	bl.free = bl.free[n:]
	return s
}
