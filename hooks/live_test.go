package hooks

import (
	"fmt"
	"sync"
	"testing"
)

func TestLiveValues(t *testing.T) {
	l := NewLiveValues()
	l.Observe("things/thermo-1/data/temperature", []byte(`{"value":21.37,"unit":"C","ok":true,"door":false,"nested":{"x":1},"list":[1],"nil":null}`))
	l.Observe("things/thermo-1/data/humidity", []byte(`not json`))
	l.Observe("things/thermo-1/data/battery", []byte(`[1,2]`))
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
	l.Observe("things/thermo-1/data/temperature", []byte(`{"value":19}`))
	if got, _ := l.Value("thermo-1", "temperature", "value"); got != 19.0 {
		t.Errorf("after a newer reading value = %v, want 19", got)
	}
	if got, ok := l.Value("thermo-1", "temperature", "unit"); ok {
		t.Errorf("a field of the previous reading survived: unit = %v", got)
	}
}

// Streams first seen at different times, some read often, some never:
// each must keep its own latest reading across the moves of the new ones
// into the map read without a lock.
func TestLiveValuesManyStreams(t *testing.T) {
	l := NewLiveValues()
	const streams = 2000
	for round := range 3 {
		for i := range streams {
			if i%(round+1) != 0 {
				continue // later rounds skip some: they keep an older reading
			}
			l.Observe(fmt.Sprintf("things/t-%d/data/s", i), fmt.Appendf(nil, `{"v":%d}`, round*streams+i))
			if i%7 == 0 { // a condition reading a young stream at once
				if v, ok := l.Value(fmt.Sprintf("t-%d", i), "s", "v"); !ok || v != float64(round*streams+i) {
					t.Fatalf("round %d stream %d: just observed, Value = %v, %v", round, i, v, ok)
				}
			}
		}
	}
	for i := range streams {
		last := 0
		for round := range 3 {
			if i%(round+1) == 0 {
				last = round
			}
		}
		v, ok := l.Value(fmt.Sprintf("t-%d", i), "s", "v")
		if !ok || v != float64(last*streams+i) {
			t.Fatalf("stream %d: Value = %v, %v; want %d", i, v, ok, last*streams+i)
		}
	}
	if _, ok := l.Value("t-0", "other", "v"); ok {
		t.Fatal("a stream never observed has a value")
	}
	if m := l.streams.Load(); m == nil || len(*m) < streams/2 {
		t.Fatalf("the streams were never moved to the map read without a lock")
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
				l.Observe(fmt.Sprintf("things/t-%d/data/s", i%3), fmt.Appendf(nil, `{"v":%d}`, w*1000+i))
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
	topics := make([]string, 30)
	for i := range topics {
		topics[i] = fmt.Sprintf("things/sensor-%d/data/temperature", i+1)
	}
	payload := []byte(`{"temperature":21.37}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Observe(topics[i%len(topics)], payload)
			i++
		}
	})
}
