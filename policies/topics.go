package policies

import (
	"math/bits"
	"strings"
)

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
// the strings are slices of topic. Every publish parses its topic twice
// (its decision, OnPublish), so it is one pass over the bytes: a topic is
// valid when it is things/{thing}[/state|/data/{stream}|/cmd/{name}] with
// non-empty levels and no wildcard or NUL anywhere.
func ParseTopic(topic string) (Resource, bool) {
	const prefix = "things/"
	if len(topic) <= len(prefix) || topic[:len(prefix)] != prefix {
		return Resource{}, false
	}
	rest := topic[len(prefix):]
	s1, s2 := -1, -1 // the slashes after the thing and after the kind
	// slash records the slash at j, or reports a fourth level.
	slash := func(j int) bool {
		switch {
		case s1 < 0:
			s1 = j
		case s2 < 0:
			s2 = j
		default:
			return false
		}
		return true
	}
	i := 0
	for ; len(rest)-i >= 8; i += 8 { // eight bytes at a time, as plainEnd does
		w := load64(rest[i:])
		for m := topicSpecial(w); m != 0; {
			k := bits.TrailingZeros64(m) >> 3
			if rest[i+k] != '/' || !slash(i+k) {
				return Resource{}, false // a wildcard, a NUL or a fourth level
			}
			// The flags above the lowest may be false: look again at the
			// bytes after it alone.
			sh := uint(k+1) * 8
			if sh == 64 {
				break
			}
			m = topicSpecial(w>>sh) & (highBits >> sh) << sh
		}
	}
	for ; i < len(rest); i++ {
		switch rest[i] {
		case '/':
			if !slash(i) {
				return Resource{}, false
			}
		case '+', '#', 0:
			return Resource{}, false
		}
	}
	if s1 < 0 {
		return Resource{Thing: rest, Kind: ResDocument}, true
	}
	thing := rest[:s1]
	if thing == "" {
		return Resource{}, false
	}
	if s2 < 0 {
		if rest[s1+1:] == "state" {
			return Resource{Thing: thing, Kind: ResState}, true
		}
		return Resource{}, false
	}
	kind, name := rest[s1+1:s2], rest[s2+1:]
	switch {
	case name == "":
		return Resource{}, false
	case kind == "data":
		return Resource{Thing: thing, Kind: ResData, Name: name}, true
	case kind == "cmd":
		return Resource{Thing: thing, Kind: ResCommand, Name: name}, true
	}
	return Resource{}, false
}

const highBits = 0x8080808080808080

// topicSpecial sets the high bit of the bytes of w (little-endian) that are
// '/', '+', '#' or NUL, exactly for the lowest such byte (the has-zero-byte
// tests may also flag a byte above a flagged one, never one below).
func topicSpecial(w uint64) uint64 {
	const ones = 0x0101010101010101
	s := w ^ (ones * '/')
	p := w ^ (ones * '+')
	h := w ^ (ones * '#')
	return ((s-ones)&^s | (p-ones)&^p | (h-ones)&^h | (w-ones)&^w) & highBits
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
