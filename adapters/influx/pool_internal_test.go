package influx

import (
	"bytes"
	"strconv"
	"testing"
	"time"
)

// TestPoolKeepsNoBigSets: a walker goes back to the pool without the name
// sets of the big reading it walked.
func TestPoolKeepsNoBigSets(t *testing.T) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := range 30_000 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"field.number.f` + strconv.Itoa(i) + `":1`)
	}
	b.WriteByte('}')
	if _, err := AppendLine(nil, Reading{Thing: "t-1", Stream: "s", Owner: "an", Payload: b.Bytes(), Received: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	w := walkers.Get().(*walker) // the walker just put back, on this P
	defer walkers.Put(w)
	if len(w.leaves)+len(w.parents) > 0 {
		t.Errorf("the pooled walker keeps %d leaves and %d parents of the last reading", len(w.leaves), len(w.parents))
	}
}
