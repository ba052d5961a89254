package hooks

import (
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
