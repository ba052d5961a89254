package policies

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// FuzzParsePolicy checks that ParsePolicy never panics, that every failure
// is a *ValidationError with at least one worded problem, and that every
// policy it accepts survives the canonical round trip (json.Marshal, then
// ParsePolicy again) unchanged. Seeds live in testdata/fuzz/FuzzParsePolicy.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(designExample))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error %v (%T) is not a non-empty *ValidationError", err, err)
			}
			for _, pr := range ve.Problems {
				if pr.Message == "" {
					t.Fatalf("problem at %q has no message", pr.Path)
				}
			}
			if !reflect.DeepEqual(p, Policy{}) {
				t.Fatalf("failed parse returned %#v", p)
			}
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("marshal %#v: %v", p, err)
		}
		if len(out) > maxPolicySize {
			// Escaping (<, >, &, U+2028, replaced invalid UTF-8) can grow
			// a document near the limit past it; the limit is on input.
			return
		}
		q, err := ParsePolicy(out)
		if err != nil {
			t.Fatalf("canonical form %s does not parse: %v", out, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the policy:\n got %#v\nwant %#v\n via %s", q, p, out)
		}
	})
}
