package hooks

import (
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestKnownNetworksAtTheCap: with knownUsers names remembered (loaded at
// start), one more name logging in must not make the memory forget all of
// them: they are still known, and their next logins (seen today) write
// nothing. Before, the memory started over: every remembered name lost its
// known networks at once (a stranger's guesses could lock each out), and
// each one's next login wrote the state file again, under the lock every
// login takes.
func TestKnownNetworksAtTheCap(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	store := &memNetworks{names: map[Digest][]KnownNetwork{}}
	k := newKnownAddresses()
	k.now = func() time.Time { return now }
	key := []byte("data dir key")
	if err := k.keep(key, &memNetworks{names: map[Digest][]KnownNetwork{}}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("thing-%06d", i) }
	for i := range knownUsers {
		store.names[k.digest(name(i))] = []KnownNetwork{{Network: k.digest(name(i), network("192.0.2.7")), Seen: now.Add(-time.Hour)}}
	}
	if err := k.keep(key, store, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	k.add("newcomer", "198.51.100.1")
	store.writes = 0
	forgot := 0
	for i := range 1000 {
		if !k.has(name(i), "192.0.2.7") {
			forgot++
		}
		k.add(name(i), "192.0.2.7")
	}
	if forgot > 1 || store.writes > 1 {
		t.Errorf("one name past the cap: %d of 1,000 remembered names forgot their network, and their logins wrote the store %d times (want at most 1 each)", forgot, store.writes)
	}
}
