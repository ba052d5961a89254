package hooks

import (
	"fmt"
	"sync"
	"testing"
)

func TestLiveValues(t *testing.T) {
	l := NewLiveValues()
	l.Observe("thermo-1", "temperature", []byte(`{"value":21.37,"unit":"C","ok":true,"door":false,"nested":{"x":1},"list":[1],"nil":null}`))
	l.Observe("thermo-1", "humidity", []byte(`not json`))
	l.Observe("thermo-1", "battery", []byte(`[1,2]`))
	for _, c := range []struct {
		thing, stream, field string
		want                 any // nil: absent
	}{
		{"thermo-1", "temperature", "value", 21.37},
		{"thermo-1", "temperature", "unit", "C"},
		{"thermo-1", "temperature", "ok", true},
		{"thermo-1", "temperature", "door", false},
		{"thermo-1", "temperature", "nested", nil},
		{"thermo-1", "temperature", "list", nil},
		{"thermo-1", "temperature", "nil", nil},
		{"thermo-1", "temperature", "missing", nil},
		{"thermo-1", "humidity", "value", nil},
		{"thermo-1", "battery", "value", nil},
		{"thermo-2", "temperature", "value", nil},
	} {
		got, ok := l.Value(c.thing, c.stream, c.field)
		if ok != (c.want != nil) || got != c.want {
			t.Errorf("Value(%s, %s, %s) = %v, %v; want %v", c.thing, c.stream, c.field, got, ok, c.want)
		}
	}

	// A newer reading replaces the whole previous one, fields it lacks included.
	l.Observe("thermo-1", "temperature", []byte(`{"value":19}`))
	if got, _ := l.Value("thermo-1", "temperature", "value"); got != 19.0 {
		t.Errorf("after a newer reading value = %v, want 19", got)
	}
	if got, ok := l.Value("thermo-1", "temperature", "unit"); ok {
		t.Errorf("a field of the previous reading survived: unit = %v", got)
	}
}

// Readings arrive on publishers' goroutines while conditions read them on
// others: run under -race.
func TestLiveValuesConcurrent(t *testing.T) {
	l := NewLiveValues()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 500 {
				l.Observe(fmt.Sprintf("t-%d", i%3), "s", fmt.Appendf(nil, `{"v":%d}`, w*1000+i))
			}
		}()
		go func() {
			defer wg.Done()
			for i := range 500 {
				if v, ok := l.Value(fmt.Sprintf("t-%d", i%3), "s", "v"); ok {
					if _, isNum := v.(float64); !isNum {
						t.Errorf("v = %T %v", v, v)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if _, ok := l.Value("t-0", "s", "v"); !ok {
		t.Error("no reading left after the writers finished")
	}
}

// BenchmarkLiveObserve is OnPublish's share: every publish on a data topic
// records its payload, from many publishers' goroutines at once.
func BenchmarkLiveObserve(b *testing.B) {
	l := NewLiveValues()
	things := make([]string, 30)
	for i := range things {
		things[i] = fmt.Sprintf("sensor-%d", i+1)
	}
	payload := []byte(`{"temperature":21.37}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Observe(things[i%len(things)], "temperature", payload)
			i++
		}
	})
}
