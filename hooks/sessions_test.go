package hooks

import (
	"errors"
	"net"
	"sync"
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

// TestSessionsConcurrentChanges: writers putting and dropping clients while
// readers look them up (under -race in make test); every change lands, in
// every shard, and a reader sees a client's session or nothing, never
// another's.
func TestSessionsConcurrentChanges(t *testing.T) {
	var ss Sessions
	const writers, each = 4, 500
	clients := make([][]*mqtt.Client, writers)
	sessions := map[*mqtt.Client]*session{}
	for w := range clients {
		for range each {
			cl := new(mqtt.Client)
			clients[w] = append(clients[w], cl)
			sessions[cl] = newSession(policies.UserPrincipal("doctor"), false, "")
		}
	}
	stop := make(chan struct{})
	var readers, done sync.WaitGroup
	for w := range writers {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, cl := range clients[w] {
					if s := ss.get(cl); s != nil && s != sessions[cl] {
						t.Error("a lookup found another client's session")
						return
					}
				}
			}
		}()
	}
	for w := range writers {
		done.Add(1)
		go func() {
			defer done.Done()
			for i, cl := range clients[w] {
				ss.put(cl, sessions[cl])
				if i%2 == 1 {
					ss.drop(cl)
				}
			}
		}()
	}
	done.Wait()
	close(stop)
	readers.Wait()
	used := map[*sessionShard]bool{}
	for w := range writers {
		for i, cl := range clients[w] {
			used[ss.shard(cl)] = true
			if got, want := ss.get(cl) != nil, i%2 == 0; got != want {
				t.Fatalf("writer %d client %d: kept = %v, want %v", w, i, got, want)
			}
		}
	}
	if len(used) < sessionShards/2 {
		t.Errorf("%d clients used only %d of %d shards", writers*each, len(used), sessionShards)
	}
}
