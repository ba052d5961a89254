package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"
)

// TestArchiveInfluxOutageLosesNothing: influxd is stopped for 30 s while a
// thing publishes 1,000 readings per second, then restarted: every reading
// is in InfluxDB afterwards.
func TestArchiveInfluxOutageLosesNothing(t *testing.T) {
	t.Parallel()
	srv := outageInfluxd(t)
	b := startBroker(t, archiveConfig(t, srv.URL, "veil_outage"), zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	defer b.Close()
	thermo := dialAt(t, b.Addr("mqtt"), "thermo-1", "thermo-1-secret", "thermo-1", "")

	// QoS 0 at 1,000 per second: QoS 1 throughput of one connection is
	// bounded here by mochi's bolt store, which fsyncs every inflight
	// acknowledgement (about 200 per second on this disk); the QoS 1
	// guarantee has its own test (SIGKILL below). A final QoS 1 marker
	// proves the broker has processed every reading before it.
	var sent atomic.Int64
	stopPub := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		start := time.Now()
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				pubDone <- nil
				return
			default:
			}
			if d := time.Until(start.Add(time.Duration(i) * time.Millisecond)); d > 0 {
				time.Sleep(d)
			}
			if _, err := thermo.Publish(context.Background(), &paho.Publish{Topic: "things/thermo-1/data/temperature", QoS: 0,
				Payload: fmt.Appendf(nil, `{"temperature":21.5,"seq":%d}`, i)}); err != nil {
				pubDone <- err
				return
			}
			sent.Add(1)
		}
	}()
	time.Sleep(time.Second)
	srv.Stop()
	outage := time.Now()
	time.Sleep(30 * time.Second)
	close(stopPub)
	if err := <-pubDone; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	if code := thermo.pub("things/thermo-1/data/temperature", fmt.Sprintf(`{"temperature":21.5,"seq":%d}`, sent.Load()), 1); code != 0 {
		t.Fatalf("marker PUBACK 0x%02x", code)
	}
	total := sent.Load() + 1
	elapsed := time.Since(outage)
	t.Logf("published %d readings, %d during %.1f s of outage", total, total-1000, elapsed.Seconds())
	if rate := float64(total) / (elapsed.Seconds() + 1); rate < 900 {
		t.Fatalf("published %.0f readings per second, want 1,000", rate)
	}
	st, _ := b.ArchiveStats()
	if st.SpoolBytes == 0 || st.Up {
		t.Fatalf("during the outage: %+v", st)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.DrainArchive(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ = b.ArchiveStats()
	if st.Overflow != 0 || st.Failures == 0 || st.Written != total {
		t.Fatalf("after the outage: %+v (published %d)", st, total)
	}
	if n := fluxCount(t, srv.URL, "veil_outage/", "temperature", "thermo-1", "seq"); n != total {
		t.Fatalf("InfluxDB holds %d readings, %d were published", n, total)
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	return "http://" + addr
}

// TestArchiveSpoolFullIsCountedAndBrokerKeepsServing: with InfluxDB away
// and the spool at its bound, further readings are counted (metric and a
// warning), and live delivery and acknowledgements go on.
func TestArchiveSpoolFullIsCountedAndBrokerKeepsServing(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	cfg := archiveConfig(t, deadURL(t), "veil_full")
	cfg.InfluxSpoolBytes = 1 << 16
	b := startBroker(t, cfg, zerolog.New(&logs).Level(zerolog.WarnLevel))
	defer b.Close()
	an := dialAt(t, b.Addr("mqtt"), "an", "an-pass", "an-full", "")
	an.sub("things/thermo-1/data/temperature", "")
	thermo := dialAt(t, b.Addr("mqtt"), "thermo-1", "thermo-1-secret", "thermo-1", "")
	// QoS 0 for the bulk (QoS 1 is bounded by mochi's bolt fsyncs here),
	// then QoS 1 readings beyond the bound: still acknowledged.
	const n = 1500
	for i := range n - 20 {
		thermo.pub("things/thermo-1/data/temperature", fmt.Sprintf(`{"temperature":21.5,"seq":%d}`, i), 0)
	}
	for i := n - 20; i < n; i++ {
		if code := thermo.pub("things/thermo-1/data/temperature", fmt.Sprintf(`{"temperature":21.5,"seq":%d}`, i), 1); code != 0 {
			t.Fatalf("publish %d: PUBACK 0x%02x", i, code)
		}
	}
	for i := range n {
		select {
		case <-an.msgs:
		case <-time.After(10 * time.Second):
			t.Fatalf("owner received %d of %d live readings", i, n)
		}
	}
	st, _ := b.ArchiveStats()
	if st.Overflow == 0 || st.Overflow >= n || st.SpoolBytes > 1<<16 || st.SpoolBytes < 1<<16-200 {
		t.Fatalf("stats %+v: want the spool at its bound and the rest counted", st)
	}
	resp, err := http.Get("http://" + b.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^veil_archive_spool_overflow_total (\d+)$`).FindSubmatch(body)
	if m == nil || string(m[1]) != strconv.FormatInt(st.Overflow, 10) {
		t.Fatalf("metrics: overflow %q, want %d", m, st.Overflow)
	}
	if !bytes.Contains([]byte(logs.String()), []byte("archive spool full")) {
		t.Fatalf("no warning logged:\n%s", logs.String())
	}
}

// buildVeil builds ./cmd/veil once per test process.
var (
	veilBinOnce sync.Once
	veilBin     string
	veilBinErr  error
)

func buildVeil(t *testing.T) string {
	t.Helper()
	prebuildVeil()
	if veilBinErr != nil {
		t.Fatal(veilBinErr)
	}
	return veilBin
}

func prebuildVeil() {
	veilBinOnce.Do(func() {
		dir, err := testTempDir("bin")
		if err != nil {
			veilBinErr = err
			return
		}
		veilBin = filepath.Join(dir, "veil")
		out, err := exec.Command("go", "build", "-o", veilBin, "../cmd/veil").CombinedOutput()
		if err != nil {
			veilBinErr = fmt.Errorf("go build ./cmd/veil: %v\n%s", err, out)
		}
	})
}

// veilProcess runs `veil serve` as a child that dies with the test.
type veilProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startVeil(t *testing.T, bin string, logs io.Writer, args ...string) *veilProcess {
	t.Helper()
	p := &veilProcess{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // Pdeathsig follows the forking thread
		p.cmd = exec.Command(bin, append([]string{"serve"}, args...)...)
		p.cmd.Stdout, p.cmd.Stderr = logs, logs
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = p.cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	return p
}

func waitListening(t *testing.T, addr string, p *veilProcess) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatal("veil serve exited before listening")
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("veil serve not listening on %s", addr)
}

// TestArchiveNoAcknowledgedReadingLostOnSIGKILL: veil serve (a real
// process) is killed with SIGKILL while a thing publishes at QoS 1, with
// InfluxDB unreachable so that every acknowledged reading is only in the
// spool; after a restart against InfluxDB every acknowledged reading
// arrives.
func TestArchiveNoAcknowledgedReadingLostOnSIGKILL(t *testing.T) {
	t.Parallel()
	bin := buildVeil(t)
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(bin)) }) // the only user
	srv := influxd(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dataDir := t.TempDir()
	args := func(url string) []string {
		return []string{"--mqtt", addr, "--http", "", "--data-dir", dataDir, "--bootstrap", "testdata/archive/household.yaml",
			"--influx-url", url, "--influx-bucket", "veil_kill", "--log-level", "warn"}
	}
	var logs syncBuffer
	first := startVeil(t, bin, &logs, args(deadURL(t))...)
	waitListening(t, addr, first)

	thermo := dialAt(t, addr, "thermo-1", "thermo-1-secret", "thermo-1", "")
	var ackedMu sync.Mutex
	var acked []int
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r, err := thermo.Publish(ctx, &paho.Publish{Topic: "things/thermo-1/data/temperature", QoS: 1,
				Payload: fmt.Appendf(nil, `{"temperature":20,"seq":%d}`, i)})
			cancel()
			if err != nil || r == nil || r.ReasonCode != 0 {
				return // the broker is gone
			}
			ackedMu.Lock()
			acked = append(acked, i)
			ackedMu.Unlock()
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	<-pubDone
	ackedMu.Lock()
	n := len(acked)
	ackedMu.Unlock()
	if n < 100 {
		t.Fatalf("only %d readings acknowledged before the kill\n%s", n, logs.String())
	}

	second := startVeil(t, bin, &logs, args(srv.URL)...)
	defer func() {
		_ = second.cmd.Process.Signal(syscall.SIGTERM)
		<-second.done
	}()
	waitListening(t, addr, second)
	var seen map[int]bool
	deadline := time.Now().Add(time.Minute)
	for {
		seen = fluxSeqs(t, srv.URL, "veil_kill/", "temperature", "thermo-1")
		if len(seen) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var missing []int
	for _, i := range acked {
		if !seen[i] {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged readings missing after SIGKILL and restart (first: %v)\n%s", len(missing), n, missing[:min(10, len(missing))], logs.String())
	}
	t.Logf("%d acknowledged readings before SIGKILL, all in InfluxDB after the restart", n)
}
