package policies

import (
	"errors"
	"time"
)

// ErrWithheld is wrapped by every error View.Apply returns: the message must
// not reach this requester at all (not empty, not raw).
var ErrWithheld = errors.New("withheld")

// View is a compiled, immutable set of constraints: what one class of
// requesters sees of a payload. Requesters whose decisions share a View
// (equal Key) receive the same bytes, so a fan-out rewrites once per view.
type View struct {
	key  string
	rate time.Duration
}

// NewView compiles validated constraints. key is the owner's
// pseudonymisation key (HMAC key); it only matters for pseudonymize.
func NewView(key []byte, cs []Constraint) (*View, error) {
	return nil, errors.New("not implemented")
}

// Key identifies the view: equal keys rewrite equal payloads to equal bytes.
func (v *View) Key() string { return v.key }

// Rate is the minimum period between two messages to one requester; zero
// when unlimited. The caller enforces it per subscriber.
func (v *View) Rate() time.Duration { return v.rate }

// Apply rewrites payload into a fresh slice, or returns an error wrapping
// ErrWithheld saying why the requester gets nothing.
func (v *View) Apply(payload []byte) ([]byte, error) {
	return nil, ErrWithheld
}
