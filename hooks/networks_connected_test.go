package hooks

import (
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestKnownNetworkOfANameConnectedAllAlong: a thing logs in once and stays
// connected for 31 days (the usual for a device); the broker stops, which
// refreshes the networks of the connections still open
// (Authenticator.RefreshNetworks, also run once a day), and starts again.
// Its network is still known: it has been "logging in" from there all
// along. (Its stored time was that of its one login: it was forgotten at
// the restart, just when a stranger's guesses could keep it out.) A
// connection from a network the name is not known on refreshes nothing.
func TestKnownNetworkOfANameConnectedAllAlong(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	store := &memNetworks{names: map[Digest][]KnownNetwork{}}
	key := []byte("data dir key")
	r := newLoginRig(t)
	r.a.known.now = func() time.Time { return now }
	if err := r.a.RememberNetworks(key, store); err != nil {
		t.Fatal(err)
	}
	if !r.connectFrom("cam-1", "cam-1", "cam-secret", "192.0.2.7") {
		t.Fatal("cam-1 refused")
	}
	for _, c := range []struct{ id, user, remote string }{{"cam-1", "cam-1", "192.0.2.7"}, {"an-x", "an", "198.51.100.9"}} {
		cl := r.srv.NewClient(nil, "t", c.id, false)
		cl.Net.Remote = net.JoinHostPort(c.remote, "40000")
		cl.Properties.Username = []byte(c.user)
		r.srv.Clients.Add(cl)
	}
	writes := store.writes
	now = now.Add(31 * 24 * time.Hour) // still connected
	r.a.RefreshNetworks()              // the stop
	if store.writes != writes+1 {
		t.Errorf("the refresh wrote %d times, want once (cam-1's network)", store.writes-writes)
	}

	k := newKnownAddresses() // the restart
	k.now = func() time.Time { return now }
	if err := k.keep(key, store, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if !k.has("cam-1", "192.0.2.7") {
		t.Error("after 31 days connected and a restart, cam-1's network is not known")
	}
	if k.has("an", "198.51.100.9") {
		t.Error("a connection from a network an never logged in from made it known")
	}
}
