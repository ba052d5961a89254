package hooks

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// memNetworks is a NetworkStore in memory that counts its writes.
type memNetworks struct {
	names  map[Digest][]KnownNetwork
	writes int
}

func (m *memNetworks) LoadNetworks(visit func(Digest, []KnownNetwork)) error {
	for k, v := range m.names {
		visit(k, append([]KnownNetwork(nil), v...))
	}
	return nil
}

func (m *memNetworks) SaveNetworks(name Digest, nets []KnownNetwork) error {
	m.writes++
	if len(nets) == 0 {
		delete(m.names, name)
		return nil
	}
	m.names[name] = append([]KnownNetwork(nil), nets...)
	return nil
}

// TestKnownNetworksKeptAcrossRestarts: what a login remembers is found by a
// fresh memory (a restart) loading the same store under the same key, not
// under another key; a network is forgotten 30 days after its last login,
// in memory and in the store; a login from a known network writes once a
// day at most; the store holds no name or address in the clear.
func TestKnownNetworksKeptAcrossRestarts(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := &memNetworks{names: map[Digest][]KnownNetwork{}}
	key := []byte("data dir key")
	boot := func(key []byte) *knownAddresses {
		k := newKnownAddresses()
		k.now = clock
		if err := k.keep(key, store, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
		return k
	}

	k := boot(key)
	k.add("an", "192.0.2.7")
	k.add("an", "192.0.2.7")
	now = now.Add(time.Hour)
	k.add("an", "192.0.2.99") // the same /24
	if store.writes != 1 {
		t.Errorf("three logins from one network within a day wrote %d times, want 1", store.writes)
	}
	now = now.Add(25 * time.Hour)
	k.add("an", "192.0.2.7")
	if store.writes != 2 {
		t.Errorf("a login a day later wrote %d times in all, want 2", store.writes)
	}
	for name, nets := range store.names {
		for _, b := range [][]byte{name[:], nets[0].Network[:]} {
			if string(b[:2]) == "an" || string(b[:3]) == "192" {
				t.Errorf("the store keeps a name or address in the clear: %q", b)
			}
		}
	}

	if !boot(key).has("an", "192.0.2.200") {
		t.Error("after a restart, an's network is not known")
	}
	if boot(key).has("ruth", "192.0.2.200") || boot(key).has("an", "198.51.100.1") {
		t.Error("after a restart, a network is known for a name or network that never logged in")
	}
	if boot([]byte("another key")).has("an", "192.0.2.200") {
		t.Error("a memory under another key finds an's network")
	}

	now = now.Add(knownFor - time.Minute)
	if !boot(key).has("an", "192.0.2.1") {
		t.Error("a network seen 30 days less a minute ago is forgotten")
	}
	now = now.Add(2 * time.Minute)
	if k.has("an", "192.0.2.1") || boot(key).has("an", "192.0.2.1") {
		t.Error("a network not seen for over 30 days is still known")
	}
	if len(store.names) != 0 {
		t.Errorf("the store still keeps %d names whose networks expired", len(store.names))
	}
}

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

// blockingNetworks is memNetworks whose writes, once block is set, wait
// until released, one by one, and tell when each starts.
type blockingNetworks struct {
	memNetworks
	block   bool
	started chan struct{}
	release chan struct{}
}

func (b *blockingNetworks) SaveNetworks(name Digest, nets []KnownNetwork) error {
	if b.block {
		b.started <- struct{}{}
		<-b.release
	}
	return b.memNetworks.SaveNetworks(name, nets)
}

// TestKnownNetworkWriteHoldsNoLogin: while a login's network is being
// written (an fsync, slow on an SD card), other logins are checked, and
// remembered if they write nothing, without waiting for it; a write that
// follows carries the name's networks as they are by then.
func TestKnownNetworkWriteHoldsNoLogin(t *testing.T) {
	store := &blockingNetworks{memNetworks: memNetworks{names: map[Digest][]KnownNetwork{}},
		started: make(chan struct{}, 4), release: make(chan struct{})}
	k := newKnownAddresses()
	if err := k.keep([]byte("key"), store, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	k.add("bo", "203.0.113.5") // written at once
	store.block = true
	done := make(chan struct{})
	go func() { k.add("an", "192.0.2.7"); close(done) }()
	<-store.started // the write holds on

	checked := make(chan [2]bool)
	go func() {
		k.add("bo", "203.0.113.6") // its network, written within a day: nothing to write
		checked <- [2]bool{k.has("an", "192.0.2.8"), k.has("bo", "203.0.113.9")}
	}()
	select {
	case known := <-checked:
		if !known[0] || !known[1] {
			t.Errorf("networks known meanwhile (an's being written, bo's): %v, want both", known)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a login waited for another login's network to be written")
	}
	second := make(chan struct{})
	go func() { k.add("an", "198.51.100.1"); close(second) }() // a new network: its write waits for the first
	time.Sleep(50 * time.Millisecond)
	store.release <- struct{}{}
	<-done
	<-store.started
	store.release <- struct{}{}
	<-second
	if store.writes != 3 {
		t.Fatalf("%d writes, want 3 (bo's, then an's twice)", store.writes)
	}
	if nets := store.names[k.digest("an")]; len(nets) != 2 {
		t.Fatalf("the store holds %d networks of an, want both", len(nets))
	}
}
