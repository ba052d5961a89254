package policies

// Policy is an owner's data-centric policy document (thesis §5.2, DESIGN.md
// "Policy document"). It is published retained on
// $config/users/{owner}/policies/{id} and applies to the things its owner
// owns or co-owns. ParsePolicy decodes it strictly.
type Policy struct {
	ID          string       `json:"id"`
	Description string       `json:"description,omitempty"`
	Priority    int          `json:"priority"`
	Effect      string       `json:"effect"` // "allow" or "deny"
	Subjects    []string     `json:"subjects"`
	Resources   []string     `json:"resources"`
	Actions     []Action     `json:"actions"`
	Purposes    []string     `json:"purposes,omitempty"`
	When        *Condition   `json:"when,omitempty"`
	Constraints []Constraint `json:"constraints,omitempty"`
}

// Condition is either composite (exactly one of All, Any, Not) or simple
// (Attr, Op and exactly one of Value or Ref).
type Condition struct {
	All []Condition `json:"all,omitempty"`
	Any []Condition `json:"any,omitempty"`
	Not *Condition  `json:"not,omitempty"`

	Attr  string `json:"attr,omitempty"`
	Op    Op     `json:"op,omitempty"`
	Value any    `json:"value,omitempty"` // string, float64, bool or []any of those
	Ref   string `json:"ref,omitempty"`   // an attribute path whose value is the right side
}

// Op compares an attribute with a value.
type Op string

const (
	OpEq       Op = "eq"
	OpNe       Op = "ne"
	OpLt       Op = "lt"
	OpLe       Op = "le"
	OpGt       Op = "gt"
	OpGe       Op = "ge"
	OpIn       Op = "in"
	OpBetween  Op = "between"
	OpPrefix   Op = "prefix"
	OpContains Op = "contains"
)

// Constraint kinds (FR3.2, data minimisation).
const (
	ConstraintAccuracy     = "accuracy"     // Field, Step: round to the nearest multiple of Step
	ConstraintGeo          = "geo"          // Lat, Lon, Meters: snap a position to a grid of Meters
	ConstraintRange        = "range"        // Field, Min and/or Max: outside → withheld
	ConstraintFields       = "fields"       // Keep or Drop: field filtering
	ConstraintPseudonymize = "pseudonymize" // Field: replaced by a keyed HMAC, stable per owner and field
	ConstraintRate         = "rate"         // Seconds: at most one message per period to this subscriber
)

// Constraint limits what an allowed requester sees. Which fields apply
// depends on Kind; ParsePolicy rejects the others.
type Constraint struct {
	Kind    string   `json:"kind"`
	Field   string   `json:"field,omitempty"`
	Step    float64  `json:"step,omitempty"`
	Lat     string   `json:"lat,omitempty"`
	Lon     string   `json:"lon,omitempty"`
	Meters  float64  `json:"meters,omitempty"`
	Min     *float64 `json:"min,omitempty"`
	Max     *float64 `json:"max,omitempty"`
	Keep    []string `json:"keep,omitempty"`
	Drop    []string `json:"drop,omitempty"`
	Seconds float64  `json:"seconds,omitempty"`
}
