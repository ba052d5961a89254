package influx_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/veil-iot/veil/adapters/influx"
)

// BenchmarkArchiveThroughput measures sustained archive throughput into the
// local influxd: b.N readings appended by 4 publishers (as the broker's
// OnPublish does: line protocol + spool write), then until InfluxDB has
// acknowledged all of them. points/s counts from the first append to the
// last acknowledgement. 100 things × 1 stream, 3 fields per reading.
//
//	go test -run '^$' -bench ArchiveThroughput -benchtime 1000000x ./adapters/influx/
func BenchmarkArchiveThroughput(b *testing.B) {
	a := open(b, "bench_"+strconv.FormatInt(time.Now().UnixNano(), 36), func(c *influx.Config) {
		if v := os.Getenv("VEIL_BENCH_BATCH"); v != "" {
			c.BatchBytes, _ = strconv.Atoi(v)
		}
	})
	// Warm up: database created, connection open.
	if err := a.Append(influx.Reading{Thing: "warm", Stream: "s", Payload: []byte(`{"v":1}`), Received: time.Now()}); err != nil {
		b.Fatal(err)
	}
	drained(b, a)
	base := a.Stats().Written
	payloads := make([][]byte, 1000)
	for i := range payloads {
		payloads[i] = fmt.Appendf(nil, `{"temperature":%d.%d,"humidity":%d.5,"ok":true}`, 15+i%20, i%10, 30+i%40)
	}
	const publishers = 4
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			for i := p; i < b.N; i += publishers {
				r := influx.Reading{Thing: "thing-" + strconv.Itoa(i%100), Stream: "temperature", Owner: "an", Kind: "sensor",
					Payload: payloads[i%len(payloads)], Received: t0.Add(time.Duration(i) * time.Microsecond)}
				if err := a.Append(r); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	appended := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := a.Drain(ctx); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	st := a.Stats()
	if got := st.Written - base; got != int64(b.N) || st.Rejected != 0 {
		b.Fatalf("written %d of %d (%+v)", got, b.N, st)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "points/s")
	b.ReportMetric(float64(appended.Nanoseconds())/float64(b.N), "append-ns/point")
}
