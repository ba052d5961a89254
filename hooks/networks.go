package hooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// knownAddresses remembers, per name, the last few networks it logged in
// from: a user or thing whose secret is being guessed (NameLimiter) still
// logs in from them. A network is an IPv4 /24 or an IPv6 /64: a host's
// IPv6 privacy address changes daily within its /64, a phone's address
// within its carrier's pool.
//
// It keeps keyed digests, not names and networks: all it answers is "has
// this name logged in from this network lately", and a NetworkStore (the
// broker's state file) keeps them across restarts, so that a restart does
// not leave every name open to being locked out by a stranger's guesses.
type knownAddresses struct {
	mu sync.Mutex
	// writeMu orders the store's writes: each is of the names' networks as
	// they are once it holds it, so a later write never carries older
	// networks, and the write (an fsync) holds up no login that checks or
	// remembers a network meanwhile (mu).
	writeMu sync.Mutex
	key     [32]byte
	names   map[Digest][]KnownNetwork // name → networks, latest last
	store   NetworkStore
	now     func() time.Time
	log     zerolog.Logger
}

// Digest is a keyed digest of a name, or of a name and a network.
type Digest [16]byte

// KnownNetwork is a network a name logged in from, and when it last did.
type KnownNetwork struct {
	Network Digest
	Seen    time.Time
	saved   time.Time // when store last got it
}

// NetworkStore keeps the networks names logged in from across restarts.
type NetworkStore interface {
	// LoadNetworks calls visit for every name it keeps.
	LoadNetworks(visit func(name Digest, nets []KnownNetwork)) error
	// SaveNetworks replaces a name's networks; none forgets the name.
	SaveNetworks(name Digest, nets []KnownNetwork) error
}

// network returns the network of addr that knownAddresses remembers.
func network(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	bits := 64
	if ip.Unmap().Is4() {
		ip, bits = ip.Unmap(), 24
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return addr
	}
	return p.String()
}

// knownPerUser is how many networks a name keeps; knownUsers bounds the
// names remembered (past it, a new name puts out one other: at worst that
// name's next login from a known network waits for its failures to pass). knownFor is
// how long a network stays known without a login from it, and knownResave
// how stale the stored time may get before a login writes it again (a login
// from a known network writes nothing in between).
const (
	knownPerUser = 4
	knownUsers   = 100_000
	knownFor     = 30 * 24 * time.Hour
	knownResave  = 24 * time.Hour
)

func newKnownAddresses() *knownAddresses {
	k := &knownAddresses{names: map[Digest][]KnownNetwork{}, now: time.Now}
	_, _ = rand.Read(k.key[:])
	return k
}

func (k *knownAddresses) digest(parts ...string) (d Digest) {
	m := hmac.New(sha256.New, k.key[:])
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	copy(d[:], m.Sum(nil))
	return d
}

// keep sets the key of the digests and the store, and loads what the store
// kept, dropping networks not seen for knownFor (and from the store too).
// Called once, before the first login.
func (k *knownAddresses) keep(key []byte, store NetworkStore, log zerolog.Logger) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.key = sha256.Sum256(key)
	k.names = map[Digest][]KnownNetwork{}
	k.store, k.log = store, log
	type stale struct {
		name Digest
		nets []KnownNetwork
	}
	var expired []stale
	now := k.now()
	cutoff := now.Add(-knownFor)
	err := store.LoadNetworks(func(name Digest, nets []KnownNetwork) {
		kept := nets[:0:0]
		ahead := false
		for _, n := range nets {
			if n.Seen.After(now) {
				// Stored while the clock was ahead: seen now, not
				// then (it would stay known until 30 days after).
				n.Seen, ahead = now, true
			}
			if n.Seen.After(cutoff) {
				n.saved = n.Seen
				kept = append(kept, n)
			}
		}
		if ahead || len(kept) != len(nets) {
			expired = append(expired, stale{name, kept})
		}
		if len(kept) > knownPerUser {
			kept = kept[len(kept)-knownPerUser:]
		}
		if len(kept) > 0 && len(k.names) < knownUsers {
			k.names[name] = kept
		}
	})
	if err != nil {
		return err
	}
	for _, s := range expired {
		if err := store.SaveNetworks(s.name, s.nets); err != nil {
			return err
		}
	}
	return nil
}

func (k *knownAddresses) has(user, addr string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	net := k.digest(user, network(addr))
	cutoff := k.now().Add(-knownFor)
	for _, n := range k.names[k.digest(user)] {
		if n.Network == net && n.Seen.After(cutoff) {
			return true
		}
	}
	return false
}

func (k *knownAddresses) add(user, addr string) {
	k.mu.Lock()
	name, net, now := k.digest(user), k.digest(user, network(addr)), k.now()
	list := k.names[name]
	entry := KnownNetwork{Network: net, Seen: now}
	for i, n := range list {
		if n.Network == net {
			entry.saved = n.saved
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == knownPerUser {
		list = list[1:]
	}
	if _, ok := k.names[name]; !ok && len(k.names) >= knownUsers {
		// One name goes (the store keeps it), not all: a memory that
		// started over left every name open to a stranger's guesses,
		// and wrote each one's next login to the store again.
		for other := range k.names {
			delete(k.names, other)
			break
		}
	}
	list = append(list, entry)
	k.names[name] = list
	due := k.store != nil && (now.Sub(entry.saved) >= knownResave || entry.saved.After(now))
	k.mu.Unlock()
	if due { // a login from a new network, or the first in a day
		k.save([]Digest{name})
	}
}

// save writes the networks of names to the store as they are now, and
// marks what it wrote saved. Names no longer remembered are skipped: their
// networks stay in the store as last written.
func (k *knownAddresses) save(names []Digest) {
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	k.mu.Lock()
	now := k.now()
	due := make(map[Digest][]KnownNetwork, len(names))
	for _, name := range names {
		if nets, ok := k.names[name]; ok {
			due[name] = append([]KnownNetwork(nil), nets...)
		}
	}
	k.mu.Unlock()
	if len(due) == 0 {
		return
	}
	var err error
	if b, ok := k.store.(NetworkBatch); ok && len(due) > 1 {
		err = b.SaveNetworksBatch(due)
	} else {
		for name, nets := range due {
			if err = k.store.SaveNetworks(name, nets); err != nil {
				break
			}
		}
	}
	if err != nil {
		k.log.Warn().Err(err).Int("names", len(due)).Msg("logins' networks are not remembered across restarts")
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, written := range due {
		nets := k.names[name]
		for i := range nets {
			for _, w := range written {
				if nets[i].Network == w.Network && nets[i].Seen.Equal(w.Seen) {
					nets[i].saved = now
				}
			}
		}
	}
}

// NetworkBatch is a NetworkStore that replaces many names' networks in
// one write (one fsync): refresh saves every connected name at once.
type NetworkBatch interface {
	SaveNetworksBatch(names map[Digest][]KnownNetwork) error
}

// refresh marks each (name, address) of connections still open as seen
// now, where the network is remembered (however long ago it was seen): a device connected for months
// logs in only when it reconnects, and would find its network forgotten
// at a restart, just when a stranger's guesses could keep it out.
// Networks saved within knownResave are not written again.
func (k *knownAddresses) refresh(pairs [][2]string) {
	k.mu.Lock()
	now := k.now()
	var due []Digest
	for _, p := range pairs {
		name, net := k.digest(p[0]), k.digest(p[0], network(p[1]))
		for i, n := range k.names[name] {
			if n.Network != net {
				continue // an open connection from there is a login from there, however long ago
			}
			k.names[name][i].Seen = now
			if now.Sub(n.saved) >= knownResave || n.saved.After(now) {
				due = append(due, name)
			}
		}
	}
	k.mu.Unlock()
	if k.store != nil && len(due) > 0 {
		k.save(due)
	}
}
