package policies

import (
	"strings"
	"testing"
)

// BenchmarkParseTopic: every publish parses its topic for its decision and
// again in OnPublish.
func BenchmarkParseTopic(b *testing.B) {
	topics := []string{"things/sensor-12/data/temperature", "things/lock-1/cmd/unlock", "things/lock-1/state", "things/thermo-1"}
	i := 0
	for b.Loop() {
		if _, ok := ParseTopic(topics[i&3]); !ok {
			b.Fatal("refused")
		}
		i++
	}
}

// parseTopicByLevels is ParseTopic as it was written first, level by
// level: the specification the one-pass parser must agree with.
func parseTopicByLevels(topic string) (Resource, bool) {
	valid := func(s string) bool { return s != "" && !strings.ContainsAny(s, "+#\x00") }
	rest, ok := strings.CutPrefix(topic, "things/")
	if !ok {
		return Resource{}, false
	}
	thing, rest, more := strings.Cut(rest, "/")
	if !valid(thing) {
		return Resource{}, false
	}
	if !more {
		return Resource{Thing: thing, Kind: ResDocument}, true
	}
	kind, name, hasName := strings.Cut(rest, "/")
	switch {
	case kind == "state" && !hasName:
		return Resource{Thing: thing, Kind: ResState}, true
	case kind == "data" && hasName && valid(name) && !strings.Contains(name, "/"):
		return Resource{Thing: thing, Kind: ResData, Name: name}, true
	case kind == "cmd" && hasName && valid(name) && !strings.Contains(name, "/"):
		return Resource{Thing: thing, Kind: ResCommand, Name: name}, true
	}
	return Resource{}, false
}

var topicCases = []string{
	"things/t", "things/t/state", "things/t/data/temperature", "things/t/cmd/unlock",
	"things/", "things", "thing/t", "things//state", "things/t/", "things/t/state/x", "things/t/data",
	"things/t/data/", "things/t/data/a/b", "things/t/cmd", "things/t/cmd/", "things/t/other/x",
	"things/+/data/x", "things/t/data/#", "things/t/+/x", "things/t\x00/state", "things/t/data/x\x00",
	"things/t/State", "things/t/datax/y", "$things/t", "things/t/data//", "things///", "things/a/b/c/d",
}

func TestParseTopic(t *testing.T) {
	for _, topic := range topicCases {
		got, gotOK := ParseTopic(topic)
		want, wantOK := parseTopicByLevels(topic)
		if got != want || gotOK != wantOK {
			t.Errorf("ParseTopic(%q) = %+v, %v; want %+v, %v", topic, got, gotOK, want, wantOK)
		}
	}
	if r, ok := ParseTopic("things/lock-1/cmd/unlock"); !ok || r != (Resource{Thing: "lock-1", Kind: ResCommand, Name: "unlock"}) {
		t.Errorf("a command topic parsed as %+v, %v", r, ok)
	}
}

func FuzzParseTopic(f *testing.F) {
	for _, topic := range topicCases {
		f.Add(topic)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		got, gotOK := ParseTopic(topic)
		want, wantOK := parseTopicByLevels(topic)
		if got != want || gotOK != wantOK {
			t.Fatalf("ParseTopic(%q) = %+v, %v; want %+v, %v", topic, got, gotOK, want, wantOK)
		}
	})
}
