package influx

import (
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkSpoolAppend is the spool's share of the publish path: one
// write(2) of a line-protocol record.
func BenchmarkSpoolAppend(b *testing.B) {
	s, err := OpenSpool(b.TempDir(), 1<<40, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := []byte("temperature,thing=thing-1,owner=an,kind=sensor temperature=21.5,humidity=40.5,ok=true 1795636800123456789\n")
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		if err := s.Append(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLine is the conversion of a reading to line protocol.
func BenchmarkLine(b *testing.B) {
	r := Reading{Thing: "thing-1", Stream: "temperature", Owner: "an", Kind: "sensor",
		Payload: []byte(`{"temperature":21.5,"humidity":40.5,"ok":true}`), Received: time.Now()}
	for b.Loop() {
		if _, err := Line(r); err != nil {
			b.Fatal(err)
		}
	}
}
