package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/alexedwards/argon2id"
	"gopkg.in/yaml.v3"

	"github.com/veil-iot/veil/adapters/mongo"
	"github.com/veil-iot/veil/policies"
)

// Bootstrap is the content of a bootstrap file: the users, things, places,
// relations, memberships and owner policies a deployment starts with
// (examples/bootstrap.yaml shows every key). It is applied at every start:
// users, places, memberships and factory entries are created or updated;
// things, relations and policies, which owners edit through the control
// plane, are seeded (see Apply). Nothing is removed.
//
// Passwords and secrets are plaintext in the file and hashed with argon2id
// when applied; the plaintext is never stored or logged.
type Bootstrap struct {
	Users       []BootstrapUser       `yaml:"users"`
	Things      []BootstrapThing      `yaml:"things"`
	Places      []BootstrapPlace      `yaml:"places"`
	Relations   []BootstrapRelation   `yaml:"relations"`
	Memberships []BootstrapMembership `yaml:"memberships"`
	Policies    []BootstrapPolicy     `yaml:"policies"`
	// Factory lists the credentials devices are made with, for
	// self-enrolment ($enroll/{serial}). Apply stores them with the secret
	// argon2id-hashed; whether a serial has enrolled is kept.
	Factory []BootstrapFactory `yaml:"factory"`

	// lines maps item and field paths ("users[2]", "users[2].password",
	// "policies[0].constraints[1].step") to their line in the file.
	lines map[string]int
	// params overrides hashParams for this Bootstrap (tests).
	params *argon2id.Params
	// conflicts of the last Apply.
	conflicts []string
}

// Conflicts names, after Apply, each change in the file that met a change
// the owners made over MQTT (or their deletion of the item), which stays
// as the owners left it.
func (b *Bootstrap) Conflicts() []string { return b.conflicts }

// hashing returns the argon2id parameters Apply hashes with.
func (b *Bootstrap) hashing() *argon2id.Params {
	if b.params != nil {
		return b.params
	}
	return hashParams
}

// BootstrapUser is a user with a plaintext password.
type BootstrapUser struct {
	Name       string         `yaml:"name"`
	Password   string         `yaml:"password"`
	Attributes map[string]any `yaml:"attributes"`
	Admin      bool           `yaml:"admin"`
}

// BootstrapThing is a thing with an optional plaintext secret (a thing
// without one cannot connect until it enrols).
type BootstrapThing struct {
	ID         string         `yaml:"id"`
	Owner      string         `yaml:"owner"`
	Kind       string         `yaml:"kind"`
	Streams    []string       `yaml:"streams"`
	Secret     string         `yaml:"secret"`
	Attributes map[string]any `yaml:"attributes"`
	Place      string         `yaml:"place"`
}

// BootstrapPlace is a place.
type BootstrapPlace struct {
	ID         string         `yaml:"id"`
	Owner      string         `yaml:"owner"`
	Parent     string         `yaml:"parent"`
	Attributes map[string]any `yaml:"attributes"`
}

// BootstrapRelation ties a user to a thing or a place. Status defaults to
// active; the window ends are RFC 3339 times, empty for open.
type BootstrapRelation struct {
	Thing      string `yaml:"thing"`
	Place      string `yaml:"place"`
	User       string `yaml:"user"`
	Relation   string `yaml:"relation"`
	Status     string `yaml:"status"`
	ValidFrom  string `yaml:"valid_from"`
	ValidUntil string `yaml:"valid_until"`
}

// BootstrapMembership puts a member into a userset (policies.Membership).
type BootstrapMembership struct {
	Group    string `yaml:"group"`
	Relation string `yaml:"relation"`
	Member   string `yaml:"member"`
}

// BootstrapPolicy is an owner's policy: in the file, `owner` plus the
// fields of the policy document inline, exactly as in JSON.
type BootstrapPolicy struct {
	Owner string
	// Document is the policy document (everything but owner) as JSON, as
	// policies.ParsePolicy reads it.
	Document json.RawMessage

	convErr string // a YAML value with no JSON equivalent
}

// BootstrapFactory is a factory credential of a device model.
type BootstrapFactory struct {
	Serial string `yaml:"serial"`
	Secret string `yaml:"secret"`
	Model  string `yaml:"model"`
	Vendor string `yaml:"vendor"`
}

// Summary says what Apply wrote.
type Summary struct {
	Users         int `json:"users"`
	Things        int `json:"things"`
	Places        int `json:"places"`
	Relationships int `json:"relationships"`
	Memberships   int `json:"memberships"`
	Policies      int `json:"policies"`
	Factory       int `json:"factory"` // factory registry entries
	// Hashed counts passwords and secrets hashed anew; Kept those whose
	// stored hash still matched the plaintext and was left as it was.
	Hashed int `json:"hashed"`
	Kept   int `json:"kept"`
	// Owned counts the things, relations and policies left as the control
	// plane has them (changed, or deleted): unchanged in the file since they
	// were seeded, or stored before the file named them.
	Owned int `json:"owned"`
	// Conflicts counts the changes in the file that met the owners' own
	// (Bootstrap.Conflicts names them): the owners' stand.
	Conflicts int `json:"conflicts"`
}

// hashParams are the argon2id parameters of the hashes Apply writes
// (64 MiB, one pass, two lanes). A stored hash made with other parameters
// is replaced even if it matches. Tests lower them.
var hashParams = &argon2id.Params{Memory: 64 * 1024, Iterations: 1, Parallelism: 2, SaltLength: 16, KeyLength: 32}

// maxConcurrentHashes bounds the argon2id work (and memory) of one Apply.
const maxConcurrentHashes = 4

// section keys and the fields their items may have. Policies take owner
// plus the top-level fields of policies.Policy; ParsePolicy checks deeper.
var bootstrapFields = map[string][]string{
	"users":       fieldsOf(BootstrapUser{}),
	"things":      fieldsOf(BootstrapThing{}),
	"places":      fieldsOf(BootstrapPlace{}),
	"relations":   fieldsOf(BootstrapRelation{}),
	"memberships": fieldsOf(BootstrapMembership{}),
	"policies":    append([]string{"owner"}, jsonFieldsOf(policies.Policy{})...),
	"factory":     fieldsOf(BootstrapFactory{}),
}

var sectionOrder = []string{"users", "things", "places", "relations", "memberships", "policies", "factory"}

func fieldsOf(v any) []string { return tagNames(v, "yaml") }

func jsonFieldsOf(v any) []string { return tagNames(v, "json") }

func tagNames(v any, tag string) []string {
	t := reflect.TypeOf(v)
	var out []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get(tag), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// LoadBootstrap reads and checks the bootstrap file at path. Decoding is
// strict: unknown keys, wrong types and duplicate keys are errors naming
// the item and the line. Everything that can be checked without the store
// is checked here too (Apply checks it again, plus references).
func LoadBootstrap(path string) (*Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	b, err := ParseBootstrap(data)
	if err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", path, err)
	}
	return b, nil
}

// ParseBootstrap is LoadBootstrap for a file's content.
func ParseBootstrap(data []byte) (*Bootstrap, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	b := &Bootstrap{lines: map[string]int{}}
	if root.Kind == 0 || len(root.Content) == 0 {
		return b, nil // an empty file bootstraps nothing
	}
	doc := root.Content[0]
	recordLines(doc, "", b.lines)
	if probs := b.checkShape(doc); len(probs) > 0 {
		return nil, probs.Err()
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(b); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var probs policies.Problems
			for _, m := range te.Errors {
				probs = append(probs, policies.Problem{Message: m})
			}
			return nil, probs.Err()
		}
		return nil, err
	}
	if _, probs := b.check(nil); len(probs) > 0 {
		return nil, probs.Err()
	}
	return b, nil
}

// recordLines notes the line of every mapping value and sequence item,
// under the path ParsePolicy and the checks below use.
func recordLines(n *yaml.Node, path string, lines map[string]int) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := keyPath(path, k.Value)
			if _, seen := lines[p]; !seen {
				lines[p] = k.Line
			}
			recordLines(v, p, lines)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = item.Line
			recordLines(item, p, lines)
		}
	}
}

// keyPath extends a path by a key the way policies.ParsePolicy does.
func keyPath(parent, key string) string {
	plain := key != ""
	for i := 0; i < len(key) && plain; i++ {
		c := key[i]
		plain = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
	}
	switch {
	case !plain:
		return parent + "[" + strconv.Quote(key) + "]"
	case parent == "":
		return key
	}
	return parent + "." + key
}

// checkShape reports unknown sections and fields and items that are not
// mappings, with their lines, before the typed decode.
func (b *Bootstrap) checkShape(doc *yaml.Node) policies.Problems {
	var probs policies.Problems
	if doc.Kind != yaml.MappingNode {
		probs = append(probs, policies.Problem{Message: fmt.Sprintf("must be a mapping of %s (line %d)", strings.Join(sectionOrder, ", "), doc.Line)})
		return probs
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		fields, ok := bootstrapFields[k.Value]
		if !ok {
			probs = append(probs, policies.Problem{Path: keyPath("", k.Value),
				Message: fmt.Sprintf("unknown section (want %s) (line %d)", strings.Join(sectionOrder, ", "), k.Line)})
			continue
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue
		}
		if v.Kind != yaml.SequenceNode {
			probs = append(probs, policies.Problem{Path: k.Value, Message: fmt.Sprintf("must be a list (line %d)", v.Line)})
			continue
		}
		for j, item := range v.Content {
			ip := fmt.Sprintf("%s[%d]", k.Value, j)
			if item.Kind != yaml.MappingNode {
				probs = append(probs, policies.Problem{Path: ip, Message: fmt.Sprintf("must be a mapping (line %d)", item.Line)})
				continue
			}
			for m := 0; m+1 < len(item.Content); m += 2 {
				fk := item.Content[m]
				if !slices.Contains(fields, fk.Value) {
					probs = append(probs, policies.Problem{Path: keyPath(ip, fk.Value),
						Message: fmt.Sprintf("unknown field (want %s) (line %d)", strings.Join(fields, ", "), fk.Line)})
				}
			}
		}
	}
	return probs
}

// UnmarshalYAML reads owner and turns the other keys into the JSON policy
// document.
func (p *BootstrapPolicy) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a policy must be a mapping", n.Line)
	}
	*p = BootstrapPolicy{}
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "owner" {
			if err := v.Decode(&p.Owner); err != nil {
				return err
			}
			continue
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		kb, _ := json.Marshal(k.Value)
		buf.Write(kb)
		buf.WriteByte(':')
		if err := yamlToJSON(v, &buf, 0); err != nil {
			if p.convErr == "" {
				p.convErr = fmt.Sprintf("%s: %v", k.Value, err)
			}
			buf.WriteString("null")
		}
	}
	buf.WriteByte('}')
	p.Document = buf.Bytes()
	return nil
}

// yamlToJSON writes a YAML value as JSON, keeping key order (ParsePolicy
// reports duplicate keys) and integers as integer literals.
func yamlToJSON(n *yaml.Node, buf *bytes.Buffer, depth int) error {
	if depth > 200 {
		return errors.New("nested too deeply")
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return errors.New("unresolved alias")
		}
		return yamlToJSON(n.Alias, buf, depth+1)
	}
	switch n.Kind {
	case yaml.MappingNode:
		buf.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
				return fmt.Errorf("line %d: keys must be plain strings", k.Line)
			}
			if i > 0 {
				buf.WriteByte(',')
			}
			kb, _ := json.Marshal(k.Value)
			buf.Write(kb)
			buf.WriteByte(':')
			if err := yamlToJSON(v, buf, depth+1); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case yaml.SequenceNode:
		buf.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := yamlToJSON(item, buf, depth+1); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case yaml.ScalarNode:
		var out []byte
		switch n.ShortTag() {
		case "!!null":
			out = []byte("null")
		case "!!bool":
			var v bool
			if err := n.Decode(&v); err != nil {
				return err
			}
			out, _ = json.Marshal(v)
		case "!!int":
			var v any
			if err := n.Decode(&v); err != nil {
				return err
			}
			out, _ = json.Marshal(v) // int, int64 or uint64: an integer literal
		case "!!float":
			var v float64
			if err := n.Decode(&v); err != nil {
				return err
			}
			if math.IsInf(v, 0) || math.IsNaN(v) {
				return fmt.Errorf("line %d: %s is not a finite number", n.Line, n.Value)
			}
			out, _ = json.Marshal(v)
		case "!!str", "!!timestamp":
			out, _ = json.Marshal(n.Value)
		default:
			return fmt.Errorf("line %d: unsupported YAML value %s", n.Line, n.ShortTag())
		}
		buf.Write(out)
	default:
		return fmt.Errorf("line %d: unsupported YAML node", n.Line)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Checking.

// plan is a checked bootstrap, ready to write.
type plan struct {
	users  []planUser
	things []planThing
	places []policies.Place
	rels   []policies.Relationship
	mems   []policies.Membership
	pols   []policies.OwnedPolicy
}

type planUser struct {
	user     policies.User
	password string
}

type planThing struct {
	thing  policies.Thing
	secret string
}

// problems collects problems with the line of the item they are about.
type problems struct {
	list  policies.Problems
	lines map[string]int
}

func (ps *problems) add(path, msg string) {
	if line := ps.lineOf(path); line > 0 {
		msg = fmt.Sprintf("%s (line %d)", msg, line)
	}
	ps.list = append(ps.list, policies.Problem{Path: path, Message: msg})
}

// lineOf finds the line of path or of the nearest enclosing item.
func (ps *problems) lineOf(path string) int {
	for path != "" {
		if l, ok := ps.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// name checks an identifier that ends up as a topic level or an MQTT
// client id / username.
func (ps *problems) name(path, s string) bool {
	switch {
	case s == "":
		ps.add(path, "must not be empty")
	case utf8.RuneCountInString(s) > 128:
		ps.add(path, "must be at most 128 characters")
	case strings.ContainsAny(s, "/+#\x00") || strings.IndexFunc(s, unicode.IsSpace) >= 0:
		ps.add(path, "must not contain '/', '+', '#', NUL or whitespace")
	default:
		return true
	}
	return false
}

func (ps *problems) attributes(path string, a map[string]any) policies.Attributes {
	if len(a) == 0 {
		return nil
	}
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(policies.Attributes, len(a))
	for _, k := range keys {
		if k == "" {
			ps.add(path, "attribute names must not be empty")
			continue
		}
		n, err := policies.Attributes{k: a[k]}.Normalize()
		if err != nil {
			ps.add(keyPath(path, k), "must be a string, number or boolean")
			continue
		}
		out[k] = n[k]
	}
	return out
}

// known is what references may point at: the file's items and, when
// checking against a store, the stored ones.
type known struct {
	users, things, places map[string]bool
	parent                map[string]string // place → parent
}

// check validates everything and builds the plan. With existing == nil it
// skips what needs the store (references, name clashes with stored items).
func (b *Bootstrap) check(existing *policies.Snapshot) (plan, policies.Problems) {
	ps := &problems{lines: b.lines}
	var pl plan
	refs := existing != nil
	k := known{users: map[string]bool{}, things: map[string]bool{}, places: map[string]bool{}, parent: map[string]string{}}
	if refs {
		for _, u := range existing.Users {
			k.users[u.Name] = true
		}
		for _, t := range existing.Things {
			k.things[t.ID] = true
		}
		for _, p := range existing.Places {
			k.places[p.ID] = true
			k.parent[p.ID] = p.Parent
		}
	}
	fileUsers, fileThings := map[string]bool{}, map[string]bool{}

	for i, u := range b.Users {
		p := fmt.Sprintf("users[%d]", i)
		if ps.name(p+".name", u.Name) {
			if fileUsers[u.Name] {
				ps.add(p+".name", fmt.Sprintf("duplicate user %q", u.Name))
			}
			fileUsers[u.Name] = true
			k.users[u.Name] = true
		}
		if u.Password == "" {
			ps.add(p+".password", "must not be empty")
		}
		pl.users = append(pl.users, planUser{
			user:     policies.User{Name: u.Name, Attributes: ps.attributes(p+".attributes", u.Attributes), Admin: u.Admin},
			password: u.Password,
		})
	}
	for _, pc := range b.Places {
		if pc.ID != "" {
			k.places[pc.ID] = true
			k.parent[pc.ID] = pc.Parent
		}
	}
	for i, t := range b.Things {
		p := fmt.Sprintf("things[%d]", i)
		if ps.name(p+".id", t.ID) {
			if fileThings[t.ID] {
				ps.add(p+".id", fmt.Sprintf("duplicate thing %q", t.ID))
			}
			fileThings[t.ID] = true
			k.things[t.ID] = true
		}
		switch t.Kind {
		case "", "sensor", "actuator", "gateway":
		default:
			ps.add(p+".kind", fmt.Sprintf("unknown kind %q (want sensor, actuator or gateway)", t.Kind))
		}
		seen := map[string]bool{}
		for j, s := range t.Streams {
			sp := fmt.Sprintf("%s.streams[%d]", p, j)
			if ps.name(sp, s) && seen[s] {
				ps.add(sp, fmt.Sprintf("duplicate stream %q", s))
			}
			seen[s] = true
		}
		if t.Owner != "" {
			ps.name(p+".owner", t.Owner)
		}
		if t.Place != "" {
			ps.name(p+".place", t.Place)
		}
		var streams []string
		if len(t.Streams) > 0 {
			streams = slices.Clone(t.Streams)
		}
		pl.things = append(pl.things, planThing{
			thing: policies.Thing{ID: t.ID, Owner: t.Owner, Kind: t.Kind, Streams: streams,
				Attributes: ps.attributes(p+".attributes", t.Attributes), Place: t.Place},
			secret: t.Secret,
		})
	}
	filePlaces := map[string]bool{}
	for i, pc := range b.Places {
		p := fmt.Sprintf("places[%d]", i)
		if ps.name(p+".id", pc.ID) {
			if filePlaces[pc.ID] {
				ps.add(p+".id", fmt.Sprintf("duplicate place %q", pc.ID))
			}
			filePlaces[pc.ID] = true
		}
		if pc.Owner != "" {
			ps.name(p+".owner", pc.Owner)
		}
		if pc.Parent != "" && ps.name(p+".parent", pc.Parent) && refs {
			if !k.places[pc.Parent] {
				ps.add(p+".parent", fmt.Sprintf("unknown place %q", pc.Parent))
			} else if cyclic(k.parent, pc.ID) {
				ps.add(p+".parent", fmt.Sprintf("place %q would contain itself", pc.ID))
			}
		}
		if refs && pc.Owner != "" && !k.users[pc.Owner] {
			ps.add(p+".owner", fmt.Sprintf("unknown user %q", pc.Owner))
		}
		pl.places = append(pl.places, policies.Place{ID: pc.ID, Owner: pc.Owner, Parent: pc.Parent,
			Attributes: ps.attributes(p+".attributes", pc.Attributes)})
	}
	if refs {
		for i, t := range b.Things {
			p := fmt.Sprintf("things[%d]", i)
			if t.Owner != "" && !k.users[t.Owner] {
				ps.add(p+".owner", fmt.Sprintf("unknown user %q", t.Owner))
			}
			if t.Place != "" && !k.places[t.Place] {
				ps.add(p+".place", fmt.Sprintf("unknown place %q", t.Place))
			}
			// A thing connects with username = its id: it must not be
			// mistaken for a user.
			if t.ID != "" && k.users[t.ID] {
				ps.add(p+".id", fmt.Sprintf("%q is also a user name", t.ID))
			}
		}
		for i, u := range b.Users {
			if u.Name != "" && k.things[u.Name] && !fileThings[u.Name] {
				ps.add(fmt.Sprintf("users[%d].name", i), fmt.Sprintf("%q is also a thing id", u.Name))
			}
		}
	}

	seenRel := map[string]bool{}
	for i, r := range b.Relations {
		p := fmt.Sprintf("relations[%d]", i)
		rel := policies.Relationship{Thing: r.Thing, Place: r.Place, User: r.User,
			Relation: policies.Relation(r.Relation), Status: policies.Status(r.Status)}
		if rel.Status == "" {
			rel.Status = policies.StatusActive
		}
		timesOK := true
		if r.ValidFrom != "" {
			t, err := policies.ParseTime(r.ValidFrom)
			if err != nil {
				ps.add(p+".valid_from", err.Error())
				timesOK = false
			}
			rel.ValidFrom = t.UTC() // as the store keeps it: a seed compares the two
		}
		if r.ValidUntil != "" {
			t, err := policies.ParseTime(r.ValidUntil)
			if err != nil {
				ps.add(p+".valid_until", err.Error())
				timesOK = false
			}
			rel.ValidUntil = t.UTC()
		}
		if err := rel.Validate(); err != nil {
			var ve *policies.ValidationError
			if errors.As(err, &ve) {
				for _, pr := range ve.Problems {
					if pr.Path == "valid_until" && !timesOK {
						continue
					}
					ps.add(keyPath(p, pr.Path), pr.Message)
				}
			} else {
				ps.add(p, err.Error())
			}
		} else {
			key := rel.Object() + "\x00" + rel.User + "\x00" + string(rel.Relation)
			if seenRel[key] {
				ps.add(p, fmt.Sprintf("duplicate relation %s of %q on %s", rel.Relation, rel.User, rel.Object()))
			}
			seenRel[key] = true
			if refs {
				if rel.Thing != "" && !k.things[rel.Thing] {
					ps.add(p+".thing", fmt.Sprintf("unknown thing %q", rel.Thing))
				}
				if rel.Place != "" && !k.places[rel.Place] {
					ps.add(p+".place", fmt.Sprintf("unknown place %q", rel.Place))
				}
				if !k.users[rel.User] {
					ps.add(p+".user", fmt.Sprintf("unknown user %q", rel.User))
				}
			}
		}
		pl.rels = append(pl.rels, rel)
	}

	seenMem := map[policies.Membership]bool{}
	for i, m := range b.Memberships {
		p := fmt.Sprintf("memberships[%d]", i)
		ok := true
		if kind, id, found := strings.Cut(m.Group, ":"); !found || kind == "" || id == "" || strings.Contains(m.Group, "#") {
			ps.add(p+".group", fmt.Sprintf("must be kind:id, like org:acme (got %q)", m.Group))
			ok = false
		}
		if m.Relation == "" || strings.ContainsAny(m.Relation, "#:") {
			ps.add(p+".relation", "must be a name like member")
			ok = false
		}
		set, _, _ := strings.Cut(m.Member, "#")
		kind, id, found := strings.Cut(set, ":")
		if !found || kind == "" || id == "" {
			ps.add(p+".member", fmt.Sprintf("must be kind:id or kind:id#relation, like user:ruth (got %q)", m.Member))
			ok = false
		} else if refs && set == m.Member {
			if kind == "user" && !k.users[id] {
				ps.add(p+".member", fmt.Sprintf("unknown user %q", id))
			}
			if kind == "thing" && !k.things[id] {
				ps.add(p+".member", fmt.Sprintf("unknown thing %q", id))
			}
		}
		pm := policies.Membership{Group: m.Group, Relation: m.Relation, Member: m.Member}
		if ok && seenMem[pm] {
			ps.add(p, fmt.Sprintf("duplicate membership of %s in %s", m.Member, pm.Userset()))
		}
		seenMem[pm] = true
		pl.mems = append(pl.mems, pm)
	}

	seenPol := map[string]bool{}
	for i, bp := range b.Policies {
		p := fmt.Sprintf("policies[%d]", i)
		if ps.name(p+".owner", bp.Owner) && refs && !k.users[bp.Owner] {
			ps.add(p+".owner", fmt.Sprintf("unknown user %q", bp.Owner))
		}
		if bp.convErr != "" {
			ps.add(p, bp.convErr)
			continue
		}
		pol, err := policies.ParsePolicy(bp.Document)
		if err != nil {
			var ve *policies.ValidationError
			if errors.As(err, &ve) {
				for _, pr := range ve.Problems {
					ps.add(joinPath(p, pr.Path), pr.Message)
				}
			} else {
				ps.add(p, err.Error())
			}
			continue
		}
		key := bp.Owner + "\x00" + pol.ID
		if seenPol[key] {
			ps.add(p+".id", fmt.Sprintf("duplicate policy %q of %q", pol.ID, bp.Owner))
		}
		seenPol[key] = true
		pl.pols = append(pl.pols, policies.OwnedPolicy{Owner: bp.Owner, Policy: pol})
	}

	seenSerial := map[string]bool{}
	for i, f := range b.Factory {
		p := fmt.Sprintf("factory[%d]", i)
		if ps.name(p+".serial", f.Serial) {
			if seenSerial[f.Serial] {
				ps.add(p+".serial", fmt.Sprintf("duplicate serial %q", f.Serial))
			}
			seenSerial[f.Serial] = true
		}
		if f.Secret == "" {
			ps.add(p+".secret", "must not be empty")
		}
	}
	return pl, ps.list
}

// joinPath appends a ParsePolicy path ("constraints[1].step", "[\"a b\"]",
// or "" for the document) to an item path.
func joinPath(item, sub string) string {
	switch {
	case sub == "":
		return item
	case strings.HasPrefix(sub, "["):
		return item + sub
	}
	return item + "." + sub
}

// cyclic reports whether following parents from id leads back to id.
func cyclic(parent map[string]string, id string) bool {
	seen := map[string]bool{}
	for p := parent[id]; p != ""; p = parent[p] {
		if p == id || seen[p] {
			return true
		}
		seen[p] = true
	}
	return false
}

// ---------------------------------------------------------------------------
// Applying.

// Apply checks the whole bootstrap against the store (references may point
// at items in the file or already stored), hashes the passwords and secrets
// whose stored hash does not already match, and then writes every item.
// If anything is wrong nothing is written; the error lists every problem,
// each naming its item ("users[2].password: must not be empty (line 14)").
//
// Applying the same file again leaves the same state and keeps the stored
// hashes (verified with argon2id against the plaintext, not re-hashed).
// Items that are in the store but not in the file are left alone.
//
// Things, relations and policies are the owners' once seeded: a handed-over
// lock, a revoked visitor, a deleted policy must stay so across restarts.
// Each is written when the file names it for the first time, and recorded
// as the file gave it (a Seed); at later starts only the fields the file
// changed since are written over the stored item (seeds.go). One already
// stored that the file names for the first time (made through the control
// plane, or by a Veil that re-applied the file at every start) is kept as
// stored. A thing's secret from the file replaces the stored one only if it
// is still the secret the file seeded.
func (b *Bootstrap) Apply(ctx context.Context, st *mongo.Store) (Summary, error) {
	var sum Summary
	snap, creds, err := st.Load(ctx)
	if err != nil {
		return sum, err
	}
	pl, probs := b.check(&snap)
	if len(probs) > 0 {
		return sum, probs.Err()
	}
	seeds, err := st.Seeds(ctx)
	if err != nil {
		return sum, err
	}
	stored, err := storedItems(&snap)
	if err != nil {
		return sum, err
	}
	thingSeeds := make([]seeding, len(pl.things))
	for i, t := range pl.things {
		if thingSeeds[i], err = seedingOf(seeds, stored, thingKey(t.thing.ID), t.thing, thingKind); err != nil {
			return sum, err
		}
	}
	relSeeds := make([]seeding, len(pl.rels))
	for i, r := range pl.rels {
		if relSeeds[i], err = seedingOf(seeds, stored, relationKey(r), r, relationKind); err != nil {
			return sum, err
		}
	}
	polSeeds := make([]seeding, len(pl.pols))
	for i, p := range pl.pols {
		if polSeeds[i], err = seedingOf(seeds, stored, policyKey(p.Owner, p.Policy.ID), p, policyKind); err != nil {
			return sum, err
		}
	}
	b.conflicts = nil
	for _, list := range [][]seeding{thingSeeds, relSeeds, polSeeds} {
		for _, sd := range list {
			b.conflicts = append(b.conflicts, sd.conflicts...)
		}
	}
	sum.Conflicts = len(b.conflicts)

	// Hash before writing anything, so a failure here writes nothing.
	userHashes := make([]string, len(pl.users))
	thingHashes := make([]string, len(pl.things))
	type job struct {
		plain, stored string
		out           *string
		// seed, for a thing's secret: the secret is the control plane's
		// once seeded (thingSecret).
		seed *seeding
	}
	var jobs []job
	for i, u := range pl.users {
		jobs = append(jobs, job{plain: u.password, stored: creds["user:"+u.user.Name], out: &userHashes[i]})
	}
	for i, t := range pl.things {
		if t.secret != "" {
			jobs = append(jobs, job{plain: t.secret, stored: creds["thing:"+t.thing.ID], out: &thingHashes[i], seed: &thingSeeds[i]})
		}
	}
	factoryHashes := make([]string, len(b.Factory))
	if len(b.Factory) > 0 {
		stored, err := st.FactoryHashes(ctx)
		if err != nil {
			return sum, err
		}
		for i, f := range b.Factory {
			jobs = append(jobs, job{plain: f.Secret, stored: stored[f.Serial], out: &factoryHashes[i]})
		}
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		hashErr error
		sem     = make(chan struct{}, maxConcurrentHashes)
		params  = b.hashing()
	)
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if j.seed != nil {
				hashed, kept, err := j.seed.thingSecret(j.plain, j.stored, params, j.out)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					hashErr = err
				case hashed:
					sum.Hashed++
				case kept:
					sum.Kept++
				}
				return
			}
			if current(j.plain, j.stored, params) {
				mu.Lock()
				sum.Kept++
				mu.Unlock()
				return // *j.out stays "": PutUser/PutThing keep the stored hash
			}
			h, err := argon2id.CreateHash(j.plain, params)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				hashErr = err
				return
			}
			*j.out = h
			sum.Hashed++
		}()
	}
	wg.Wait()
	if hashErr != nil {
		return Summary{}, fmt.Errorf("hashing: %w", hashErr)
	}

	// Places first, then what refers to them. There are no transactions
	// (FerretDB v1 has none): a failure part-way leaves earlier items
	// written, and applying again completes the job.
	for _, p := range pl.places {
		if err := st.PutPlace(ctx, p); err != nil {
			return sum, err
		}
		sum.Places++
	}
	for i, u := range pl.users {
		if err := st.PutUser(ctx, u.user, userHashes[i]); err != nil {
			return sum, err
		}
		sum.Users++
	}
	for i, t := range pl.things {
		sd := &thingSeeds[i]
		if sd.write == nil {
			sum.Owned++
			if thingHashes[i] != "" {
				if _, err := st.SetSecretHash(ctx, t.thing.ID, thingHashes[i]); err != nil {
					return sum, err
				}
			}
		} else {
			var th policies.Thing
			if err := json.Unmarshal(sd.write, &th); err != nil {
				return sum, fmt.Errorf("%s: %w", sd.seed.Key, err)
			}
			if err := st.PutThing(ctx, th, thingHashes[i]); err != nil {
				return sum, err
			}
			sum.Things++
		}
		if err := sd.record(ctx, st); err != nil {
			return sum, err
		}
	}
	for i := range pl.rels {
		sd := &relSeeds[i]
		if sd.write == nil {
			sum.Owned++
		} else {
			var r policies.Relationship
			if err := json.Unmarshal(sd.write, &r); err != nil {
				return sum, fmt.Errorf("%s: %w", sd.seed.Key, err)
			}
			if err := st.PutRelationship(ctx, r); err != nil {
				return sum, err
			}
			sum.Relationships++
		}
		if err := sd.record(ctx, st); err != nil {
			return sum, err
		}
	}
	for _, m := range pl.mems {
		if err := st.PutMembership(ctx, m); err != nil {
			return sum, err
		}
		sum.Memberships++
	}
	for i := range pl.pols {
		sd := &polSeeds[i]
		if sd.write == nil {
			sum.Owned++
		} else {
			var p policies.OwnedPolicy
			if err := json.Unmarshal(sd.write, &p); err != nil {
				return sum, fmt.Errorf("%s: %w", sd.seed.Key, err)
			}
			if err := st.PutPolicy(ctx, p.Owner, p.Policy); err != nil {
				return sum, err
			}
			sum.Policies++
		}
		if err := sd.record(ctx, st); err != nil {
			return sum, err
		}
	}
	for i, f := range b.Factory {
		if factoryHashes[i] == "" {
			continue // the stored hash still matches
		}
		if err := st.PutFactory(ctx, mongo.FactoryEntry{Serial: f.Serial, SecretHash: factoryHashes[i], Model: f.Model, Vendor: f.Vendor}); err != nil {
			return sum, err
		}
	}
	sum.Factory = len(b.Factory)
	return sum, nil
}

// current reports whether stored is a hash of plain made with the current
// parameters, so it can stay.
func current(plain, stored string, want *argon2id.Params) bool {
	if stored == "" {
		return false
	}
	p, _, _, err := argon2id.DecodeHash(stored)
	if err != nil || p.Memory != want.Memory || p.Iterations != want.Iterations ||
		p.Parallelism != want.Parallelism || p.KeyLength != want.KeyLength {
		return false
	}
	ok, err := argon2id.ComparePasswordAndHash(plain, stored)
	return err == nil && ok
}
