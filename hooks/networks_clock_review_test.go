package hooks

import (
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestKnownNetworkFromAClockAhead: a login while the clock was years ahead
// (an RTC set wrong, corrected by NTP later) stored a time in the future.
// Loaded, it counts as seen now, not then: 30 days without a login from it
// later, the network is forgotten, in memory and in the store. Before, it
// stayed known until 30 days after that future time, and a login never
// wrote it again (the stored time looked fresh).
func TestKnownNetworkFromAClockAhead(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := &memNetworks{names: map[Digest][]KnownNetwork{}}
	key := []byte("data dir key")
	boot := func() *knownAddresses {
		k := newKnownAddresses()
		k.now = clock
		if err := k.keep(key, store, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
		return k
	}
	real := now
	now = now.AddDate(10, 0, 0) // the clock ahead
	boot().add("an", "192.0.2.7")
	now = real // corrected
	if !boot().has("an", "192.0.2.7") {
		t.Fatal("the network is not known right after the clock was corrected")
	}
	now = now.Add(knownFor + time.Hour)
	if boot().has("an", "192.0.2.7") {
		t.Error("a network not logged in from for over 30 days (its time stored while the clock was ahead) is still known")
	}
}
