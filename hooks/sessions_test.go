package hooks

import (
	"errors"
	"net"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/veil-iot/veil/policies"
)

// TestSweepDropsFinishedClients: a record stays while its client is open
// (connecting included) or is the offline client of a persistent session,
// and goes once mochi is done with the client (closed, and its id gone or
// taken over).
func TestSweepDropsFinishedClients(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: false})
	client := func(id string) *mqtt.Client {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
		return srv.NewClient(a, "test", id, false)
	}
	closed := errors.New("closed by the test")

	open := client("open")
	srv.Clients.Add(open)
	connecting := client("connecting") // open, not yet in mochi's client map
	offline := client("offline")       // a persistent session between connections
	srv.Clients.Add(offline)
	offline.Stop(closed)
	takenOver := client("reconnected")
	takenOver.Stop(closed)
	srv.Clients.Add(client("reconnected")) // the connection that took the id over
	finished := client("finished")         // a clean session: mochi deleted it
	finished.Stop(closed)

	var ss Sessions
	for _, cl := range []*mqtt.Client{open, connecting, offline, takenOver, finished} {
		ss.put(cl, newSession(policies.UserPrincipal("doctor"), false, ""))
	}
	if n := ss.Sweep(srv); n != 2 {
		t.Errorf("Sweep dropped %d records, want 2", n)
	}
	for _, tc := range []struct {
		name string
		cl   *mqtt.Client
		kept bool
	}{
		{"open client", open, true},
		{"client still connecting", connecting, true},
		{"offline persistent session", offline, true},
		{"taken-over connection", takenOver, false},
		{"finished clean session", finished, false},
	} {
		if kept := ss.get(tc.cl) != nil; kept != tc.kept {
			t.Errorf("%s: record kept = %v, want %v", tc.name, kept, tc.kept)
		}
	}
	if n := ss.Sweep(srv); n != 0 {
		t.Errorf("a second Sweep dropped %d records, want 0", n)
	}
}
