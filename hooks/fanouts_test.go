package hooks

import (
	"strconv"
	"testing"
)

func TestFanoutsFindOnlyTheirOwnMessage(t *testing.T) {
	f := newFanouts()
	a := newMessage("things/a/data/t", []byte(`{"t":1}`), nil)
	f.begin(a)
	if got := f.current("things/a/data/t"); got != a {
		t.Fatalf("current(a) = %p, want %p", got, a)
	}
	if got := f.current("things/b/data/t"); got != nil {
		t.Fatalf("current(b) = %p before b began, want nil", got)
	}

	// Another publisher on the same topic takes the slot; the first one's
	// end (a different payload) must not remove the second's message.
	b := newMessage("things/a/data/t", []byte(`{"t":1}`), nil)
	f.begin(b)
	f.end(a.topic, a.raw)
	if got := f.current("things/a/data/t"); got != b {
		t.Fatalf("after the first publisher ended, current = %p, want the second's %p", got, b)
	}
	f.end(b.topic, b.raw)
	if got := f.current("things/a/data/t"); got != nil {
		t.Fatalf("after both ended, current = %p, want nil", got)
	}

	// Topics sharing a slot evict each other but never answer for each other.
	var x, y string
	for i := 0; x == "" || y == ""; i++ {
		topic := "things/t" + strconv.Itoa(i) + "/data/t"
		if f.slot(topic) != f.slot("things/a/data/t") {
			continue
		}
		if x == "" {
			x = topic
		} else if topic != x {
			y = topic
		}
	}
	f.begin(newMessage("things/a/data/t", []byte(`1`), nil))
	f.begin(newMessage(x, []byte(`2`), nil))
	if got := f.current("things/a/data/t"); got != nil {
		t.Fatalf("current(a) = %q after %s took its slot, want nil", got.raw, x)
	}
	if got := f.current(y); got != nil {
		t.Fatalf("current(%s) = %q, a message of %s", y, got.raw, got.topic)
	}
}
