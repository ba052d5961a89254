package policies

import (
	"testing"

	"github.com/veil-iot/veil/loadgen"
)

func BenchmarkZZApplyLoadgen(b *testing.B) {
	v := mustView(b, testKey, accuracy("temperature", 0.1))
	p := loadgen.Payload(3, 17, 1764100000000000000, 128)
	b.Log(string(p), len(p))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Apply(p); err != nil {
			b.Fatal(err)
		}
	}
}
