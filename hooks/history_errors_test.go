package hooks_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/hooks"
)

// failingArchive fails every query as a store would, its error naming
// the store's insides.
type failingArchive struct{}

func (failingArchive) History(context.Context, string, string, time.Time, time.Time, func(time.Time, []byte) bool) error {
	return errors.New(`archive query: 500 Internal Server Error: bucket "veil-prod/autogen" on influx-7.internal: token s3cret expired`)
}

// TestHistoryArchiveErrorTextNotAnswered: a failing archive is logged
// with its error, but the requester is answered "archive unavailable"
// only: the store's own text (its host, bucket, query) is not theirs.
func TestHistoryArchiveErrorTextNotAnswered(t *testing.T) {
	e, creds := historyHousehold(t)
	var log lockedBuffer
	addr := serveHistory(t, e, creds, failingArchive{}, func(c *hooks.HistoryConfig) { c.Log = zerolog.New(&log) })
	for _, who := range []string{"an", "doctor"} {
		t.Run(who, func(t *testing.T) {
			pages := newAsker(t, addr, who+"-err", who).ask(`{}`, "")
			if len(pages) != 1 || pages[0].OK || pages[0].Error != "archive unavailable" {
				t.Fatalf("answer %+v, want the error \"archive unavailable\" only", pages)
			}
			for _, leak := range []string{"influx", "s3cret", "veil-prod", "500"} {
				if strings.Contains(pages[0].Error, leak) {
					t.Errorf("the answer %q holds the archive's %q", pages[0].Error, leak)
				}
			}
		})
	}
	if !strings.Contains(log.String(), "token s3cret expired") {
		t.Errorf("the archive's error is not in the log: %s", log.String())
	}
}

// lockedBuffer is a log sink for several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
