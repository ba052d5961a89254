package policies

import "strings"

// ResourceKind says which part of a thing a topic addresses.
type ResourceKind uint8

const (
	ResNone     ResourceKind = iota
	ResData                  // things/{thing}/data/{stream}
	ResState                 // things/{thing}/state
	ResCommand               // things/{thing}/cmd/{name}
	ResDocument              // things/{thing}: the thing document (configure)
)

// Resource is a parsed concrete topic.
type Resource struct {
	Thing string
	Kind  ResourceKind
	Name  string // the stream for data, the command for cmd
}

// ParseTopic parses a concrete application topic. It does not allocate:
// the strings are slices of topic.
func ParseTopic(topic string) (Resource, bool) {
	rest, ok := strings.CutPrefix(topic, "things/")
	if !ok {
		return Resource{}, false
	}
	thing, rest, more := strings.Cut(rest, "/")
	if !validLevel(thing) {
		return Resource{}, false
	}
	if !more {
		return Resource{Thing: thing, Kind: ResDocument}, true
	}
	kind, name, hasName := strings.Cut(rest, "/")
	switch {
	case kind == "state" && !hasName:
		return Resource{Thing: thing, Kind: ResState}, true
	case kind == "data" && hasName && validLevel(name) && !strings.Contains(name, "/"):
		return Resource{Thing: thing, Kind: ResData, Name: name}, true
	case kind == "cmd" && hasName && validLevel(name) && !strings.Contains(name, "/"):
		return Resource{Thing: thing, Kind: ResCommand, Name: name}, true
	}
	return Resource{}, false
}

// validLevel is a non-empty concrete topic level. (A loop: ContainsAny
// builds a byte set on every call, and every publish parses its topic.)
func validLevel(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '+', '#', 0:
			return false
		}
	}
	return true
}

// ValidFilter reports whether f is a valid MQTT topic filter: non-empty,
// '#' only as the whole last level, '+' only as a whole level, no NUL.
func ValidFilter(f string) bool {
	if f == "" || strings.IndexByte(f, 0) >= 0 {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

// MatchTopic reports whether the filter matches the concrete topic,
// following MQTT: '+' one level, '#' this level and all below (including
// the parent), and no wildcard in the first level matches a '$' topic.
func MatchTopic(filter, topic string) bool {
	if len(topic) > 0 && topic[0] == '$' && len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		if filter == "#" {
			return true
		}
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl == "#" {
			return true
		}
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a": the filter's remainder is exactly "#".
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// FiltersOverlap reports whether some concrete topic matches both filters.
func FiltersOverlap(a, b string) bool {
	for {
		if a == "#" || b == "#" {
			return true
		}
		al, arest, amore := strings.Cut(a, "/")
		bl, brest, bmore := strings.Cut(b, "/")
		if al == "#" || bl == "#" {
			return true
		}
		if al != "+" && bl != "+" && al != bl {
			return false
		}
		if !amore || !bmore {
			return amore == bmore || (amore && arest == "#") || (bmore && brest == "#")
		}
		a, b = arest, brest
	}
}
