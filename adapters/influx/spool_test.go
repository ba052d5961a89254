package influx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

func rec(i int) []byte { return []byte(fmt.Sprintf("m,thing=t v=%d %d\n", i, i)) }

// drain reads and acknowledges everything, returning the records.
func drain(t *testing.T, s *Spool, max int) []string {
	t.Helper()
	var out []string
	for {
		b, ok, err := s.Next(max)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		lines := strings.SplitAfter(string(b.Data), "\n")
		lines = lines[:len(lines)-1]
		if len(lines) != b.Lines {
			t.Fatalf("batch says %d lines, has %d", b.Lines, len(lines))
		}
		out = append(out, lines...)
		s.Ack(b)
	}
}

func TestSpoolFIFOAcrossSegmentsAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 1<<20, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s.segMax = 200 // many small segments
	for i := range 100 {
		if err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Read and acknowledge part, then "crash" (no Close) and reopen.
	b, ok, err := s.Next(120)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	s.Ack(b)
	first := b.Lines
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSpool(dir, 1<<20, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, s2, 333)
	if len(got) != 100-first {
		t.Fatalf("after reopen %d records, want %d", len(got), 100-first)
	}
	for j, line := range got {
		if want := string(rec(first + j)); line != want {
			t.Fatalf("record %d = %q, want %q", j, line, want)
		}
	}
	if s2.Len() != 0 {
		t.Fatalf("Len = %d after draining", s2.Len())
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("%d segment files left after draining, want only the active one", len(segs))
	}
	s.Close()
	s2.Close()
}

func TestSpoolBoundCountsOverflow(t *testing.T) {
	s, err := OpenSpool(t.TempDir(), 100, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	accepted := 0
	for i := range 20 {
		switch err := s.Append(rec(i)); {
		case err == nil:
			accepted++
		case errors.Is(err, ErrSpoolFull):
		default:
			t.Fatal(err)
		}
	}
	if accepted == 0 || accepted == 20 {
		t.Fatalf("accepted %d of 20 under a 100-byte bound", accepted)
	}
	if got := s.Overflow(); got != int64(20-accepted) {
		t.Fatalf("Overflow = %d, want %d", got, 20-accepted)
	}
	if s.Len() > 100 {
		t.Fatalf("Len %d beyond the bound", s.Len())
	}
	// Draining makes room again.
	drain(t, s, 1000)
	if err := s.Append(rec(99)); err != nil {
		t.Fatalf("after draining: %v", err)
	}
}

func TestSpoolCutsTornRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 1<<20, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	f, err := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("m,thing=t v=3") // a crash in the middle of a record
	f.Close()
	s2, err := OpenSpool(dir, 1<<20, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := drain(t, s2, 1000); len(got) != 3 {
		t.Fatalf("got %d records %q, want the 3 whole ones", len(got), got)
	}
}

func TestSpoolRefusesNonRecords(t *testing.T) {
	s, err := OpenSpool(t.TempDir(), 1<<20, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, r := range []string{"", "no newline", "two\nlines\n"} {
		if err := s.Append([]byte(r)); err == nil {
			t.Errorf("Append(%q) accepted", r)
		}
	}
}

func TestSpoolPipelinedBatchesAndRewind(t *testing.T) {
	s, err := OpenSpool(t.TempDir(), 1<<20, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.segMax = 150
	next := func() Batch {
		t.Helper()
		b, ok, err := s.Next(60)
		if err != nil || !ok {
			t.Fatalf("Next: %v %v", ok, err)
		}
		return b
	}
	for i := range 10 {
		s.Append(rec(i))
	}
	b1, b2 := next(), next()
	if string(b1.Data) == string(b2.Data) {
		t.Fatal("the second Next returned the first batch again")
	}
	// b2 fails: rewind, b1 is acknowledged, then reading resumes at b2.
	s.Ack(b1)
	s.Rewind()
	b2again := next()
	if string(b2again.Data) != string(b2.Data) {
		t.Fatalf("after Rewind got %q, want %q", b2again.Data, b2.Data)
	}
	s.Ack(b2again)
	// An acknowledged-to-the-end segment that was active when acknowledged
	// is dropped once a newer one exists.
	got := drain(t, s, 60)
	for i := 10; i < 20; i++ {
		s.Append(rec(i))
	}
	got = append(got, drain(t, s, 60)...)
	if len(got) != 10+10-b1.Lines-b2.Lines || s.Len() != 0 {
		t.Fatalf("drained %d records, Len %d", len(got), s.Len())
	}
}

func TestSpoolConcurrentAppendsAllKeptOnce(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 1<<30, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s.segMax = 4096 // rotations while writers race
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := s.Append(rec(w*each + i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s.Close()
	s2, err := OpenSpool(dir, 1<<30, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	seen := map[string]int{}
	for _, line := range drain(t, s2, 10000) {
		seen[line]++
	}
	for i := range writers * each {
		if seen[string(rec(i))] != 1 {
			t.Fatalf("record %d present %d times", i, seen[string(rec(i))])
		}
	}
	if len(seen) != writers*each {
		t.Fatalf("%d distinct records, want %d", len(seen), writers*each)
	}
}

// TestSpoolBacklog: readings spooled before an open are its backlog until
// acknowledged, however many segments they fill; readings appended since
// are not.
func TestSpoolBacklog(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 1<<20, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if s.Backlog() {
		t.Error("a new spool has a backlog")
	}
	if err := s.Append(rec(1)); err != nil {
		t.Fatal(err)
	}
	if s.Backlog() {
		t.Error("a reading appended since the open is a backlog")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenSpool(dir, 1<<20, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if !s.Backlog() {
		t.Error("a reading spooled before the open is no backlog")
	}
	if err := s.Append(rec(2)); err != nil {
		t.Fatal(err)
	}
	b, ok, err := s.Next(len(rec(1)))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	s.Ack(b)
	if s.Backlog() {
		t.Error("the backlog is acknowledged, still a backlog")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
