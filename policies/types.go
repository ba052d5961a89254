package policies

import (
	"fmt"
	"strings"
	"time"
)

// Action is what a principal wants to do with a resource.
type Action string

const (
	ActPublish   Action = "publish"   // a thing writes its own data or state
	ActRead      Action = "read"      // receive data or state
	ActCommand   Action = "command"   // send a command to an actuator
	ActHistory   Action = "history"   // query archived data
	ActConfigure Action = "configure" // edit a thing document, its relations or policies
)

// Actions lists every action, in the order documents and docs show them.
var Actions = []Action{ActPublish, ActRead, ActCommand, ActHistory, ActConfigure}

// Valid reports whether a is one of the five actions.
func (a Action) Valid() bool {
	switch a {
	case ActPublish, ActRead, ActCommand, ActHistory, ActConfigure:
		return true
	}
	return false
}

// Relation is the kind of tie between a user and a thing or place.
type Relation string

const (
	RelOwner     Relation = "owner"
	RelCoOwner   Relation = "co_owner"
	RelInstaller Relation = "installer"
	RelVisitor   Relation = "visitor"
)

// Valid reports whether r is a known relation.
func (r Relation) Valid() bool {
	switch r {
	case RelOwner, RelCoOwner, RelInstaller, RelVisitor:
		return true
	}
	return false
}

// Status is the life-cycle state of a relationship. Only active ones grant.
type Status string

const (
	StatusPending Status = "pending"
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
)

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	return s == StatusPending || s == StatusActive || s == StatusRevoked
}

// Attributes are key/value facts about a user, thing or place. Values are
// string, float64 or bool; Normalize coerces other numeric types.
type Attributes map[string]any

// Normalize returns a copy whose numbers are float64 and whose other
// non-scalar values are rejected.
func (a Attributes) Normalize() (Attributes, error) {
	if a == nil {
		return nil, nil
	}
	out := make(Attributes, len(a))
	for k, v := range a {
		n, ok := normalizeScalar(v)
		if !ok {
			return nil, fmt.Errorf("attribute %q: value must be a string, number or boolean, got %T", k, v)
		}
		out[k] = n
	}
	return out, nil
}

// User is a person or application that connects with a password or token.
type User struct {
	Name       string     `json:"name" bson:"_id"`
	Attributes Attributes `json:"attributes,omitempty" bson:"attributes,omitempty"`
	Admin      bool       `json:"admin,omitempty" bson:"admin,omitempty"`
}

// Thing is a device. Its id is its MQTT client id.
type Thing struct {
	ID         string     `json:"id" bson:"_id"`
	Owner      string     `json:"owner,omitempty" bson:"owner,omitempty"` // owner of record; empty until claimed and handed over
	Kind       string     `json:"kind,omitempty" bson:"kind,omitempty"`   // sensor, actuator, gateway
	Streams    []string   `json:"streams,omitempty" bson:"streams,omitempty"`
	Attributes Attributes `json:"attributes,omitempty" bson:"attributes,omitempty"`
	Place      string     `json:"place,omitempty" bson:"place,omitempty"`
}

// Place groups things (a home, a room). Relations on a place hold for every
// thing in it and in the places below it.
type Place struct {
	ID         string     `json:"id" bson:"_id"`
	Owner      string     `json:"owner,omitempty" bson:"owner,omitempty"`
	Parent     string     `json:"parent,omitempty" bson:"parent,omitempty"`
	Attributes Attributes `json:"attributes,omitempty" bson:"attributes,omitempty"`
}

// Relationship ties a user to a thing or a place (exactly one of the two).
// A zero ValidFrom or ValidUntil leaves that side of the window open; the
// window includes both ends.
type Relationship struct {
	Thing      string    `json:"thing,omitempty" bson:"thing,omitempty"`
	Place      string    `json:"place,omitempty" bson:"place,omitempty"`
	User       string    `json:"user" bson:"user"`
	Relation   Relation  `json:"relation" bson:"relation"`
	Status     Status    `json:"status" bson:"status"`
	ValidFrom  time.Time `json:"valid_from,omitzero" bson:"valid_from,omitempty"`
	ValidUntil time.Time `json:"valid_until,omitzero" bson:"valid_until,omitempty"`
}

// Object names what the relationship is on: "thing:lock-1" or "place:home".
func (r Relationship) Object() string {
	if r.Place != "" {
		return "place:" + r.Place
	}
	return "thing:" + r.Thing
}

// Validate checks the relationship on its own (not against the engine's state).
func (r Relationship) Validate() error {
	var errs Problems
	switch {
	case r.Thing == "" && r.Place == "":
		errs.add("thing", "one of thing or place is required")
	case r.Thing != "" && r.Place != "":
		errs.add("place", "only one of thing or place may be set")
	}
	if r.User == "" {
		errs.add("user", "must not be empty")
	}
	if !r.Relation.Valid() {
		errs.add("relation", fmt.Sprintf("unknown relation %q (want owner, co_owner, installer or visitor)", r.Relation))
	}
	if !r.Status.Valid() {
		errs.add("status", fmt.Sprintf("unknown status %q (want pending, active or revoked)", r.Status))
	}
	if !r.ValidFrom.IsZero() && !r.ValidUntil.IsZero() && r.ValidUntil.Before(r.ValidFrom) {
		errs.add("valid_until", "must not be before valid_from")
	}
	return errs.Err()
}

// inWindow reports whether t lies inside the relationship's validity window.
func (r *Relationship) inWindow(t time.Time) bool {
	if !r.ValidFrom.IsZero() && t.Before(r.ValidFrom) {
		return false
	}
	if !r.ValidUntil.IsZero() && t.After(r.ValidUntil) {
		return false
	}
	return true
}

// Membership puts a member into a userset, Zanzibar style:
// Group "org:acme", Relation "member", Member "user:ruth" (or another
// userset, "team:night#member"). Policy subjects name usersets as
// "org:acme#member"; membership is resolved transitively.
type Membership struct {
	Group    string `json:"group" bson:"group"`
	Relation string `json:"relation" bson:"relation"`
	Member   string `json:"member" bson:"member"`
}

// Userset is the "group#relation" form a membership grants.
func (m Membership) Userset() string { return m.Group + "#" + m.Relation }

// PrincipalKind tells users from things.
type PrincipalKind uint8

const (
	KindUser PrincipalKind = iota + 1
	KindThing
	// KindDevice is a device connected with its factory credential to
	// enrol ($enroll/{serial}); ID is its serial. It is neither a user nor
	// a thing, so no rule or policy ever grants it anything.
	KindDevice
)

// Principal is who is asking: an authenticated user or thing.
type Principal struct {
	Kind PrincipalKind
	ID   string
}

// UserPrincipal names the user called name.
func UserPrincipal(name string) Principal { return Principal{Kind: KindUser, ID: name} }

// ThingPrincipal names the thing with id.
func ThingPrincipal(id string) Principal { return Principal{Kind: KindThing, ID: id} }

// String renders "user:an" or "thing:lock-1", the form subjects use.
func (p Principal) String() string {
	switch p.Kind {
	case KindUser:
		return "user:" + p.ID
	case KindThing:
		return "thing:" + p.ID
	case KindDevice:
		return "factory:" + p.ID
	}
	return "unknown:" + p.ID
}

// Request is one access question.
type Request struct {
	Principal Principal
	Topic     string // a concrete topic: things/{thing}/data/{stream}, …/state, …/cmd/{name}, or things/{thing} for its document
	Action    Action
	Purpose   string // declared by the requester; empty when none was declared
}

// Effect is the outcome of a decision.
type Effect uint8

const (
	Deny Effect = iota
	Allow
)

func (e Effect) String() string {
	if e == Allow {
		return "allow"
	}
	return "deny"
}

// Decision is the engine's answer to a Request.
type Decision struct {
	Effect Effect
	// Rule says why: "owner", "co_owner", "installer", "visitor", "self",
	// "policy" (then PolicyID is set), or for a deny "default", "unknown-topic",
	// "unknown-thing", "unknown-principal"; the broker's enforcer denies a
	// retained command its sender may send as "retained-command".
	Rule     string
	PolicyID string
	// PolicyOwner is whose policy decided (an owner or a co-owner).
	PolicyOwner string
	// Owner is the thing's owner of record: whose audit trail records it.
	Owner string
	// Thing and Stream name the resource (Stream is empty unless a data topic).
	Thing  string
	Stream string
	// View rewrites the payload for this requester; nil means raw.
	View *View
	// Dynamic decisions depend on live data values: re-evaluate per message.
	Dynamic bool
	// Expires is when a time-dependent decision must be evaluated again;
	// zero when it holds until the configuration changes.
	Expires time.Time
}

// Allowed reports whether the decision grants access. Decision's methods
// take a pointer: a decision is 144 bytes, and a value receiver, even
// inlined, copied it on every delivery.
func (d *Decision) Allowed() bool { return d.Effect == Allow }

// Constrained reports whether an allowed decision rewrites or limits data.
func (d *Decision) Constrained() bool { return d.View != nil }

// Reason renders why, for logs and the audit trail: "rule:owner",
// "policy:doctor-location", "deny:default".
func (d *Decision) Reason() string {
	if d.Rule == "policy" {
		return "policy:" + d.PolicyID
	}
	if d.Effect == Deny {
		return "deny:" + d.Rule
	}
	return "rule:" + d.Rule
}

// Problem is one thing wrong with a document, at a JSON path.
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Problems collects every problem found, so a user fixes them in one go.
type Problems []Problem

func (ps *Problems) add(path, msg string) { *ps = append(*ps, Problem{Path: path, Message: msg}) }

// Err returns nil when there are no problems, else a *ValidationError.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// ValidationError reports everything wrong with a document.
type ValidationError struct {
	Problems Problems
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// OwnedPolicy is a policy together with the owner who published it.
type OwnedPolicy struct {
	Owner  string `json:"owner" bson:"owner"`
	Policy Policy `json:"policy" bson:"policy"`
}

// Snapshot is the whole metadata state, as a store loads it at start.
type Snapshot struct {
	Users         []User
	Things        []Thing
	Places        []Place
	Relationships []Relationship
	Memberships   []Membership
	Policies      []OwnedPolicy
}
