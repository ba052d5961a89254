package broker

import (
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/veil-iot/veil/hooks"
)

// networksBucket keeps, in the broker's state file, the networks names
// logged in from lately (hooks.NetworkStore): keyed digests of a name, each
// with its networks' digests and when they were last seen. mochi's hook
// does not read it.
var networksBucket = []byte("veil-known-networks")

const networkRecord = len(hooks.Digest{}) + 8

// LoadNetworks implements hooks.NetworkStore.
func (s *stateStore) LoadNetworks(visit func(name hooks.Digest, nets []hooks.KnownNetwork)) error {
	return s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(networksBucket).ForEach(func(k, v []byte) error {
			var name hooks.Digest
			if len(k) != len(name) || len(v)%networkRecord != 0 {
				s.Log.Error("known network record unreadable, skipped", "bytes", len(v))
				return nil
			}
			copy(name[:], k)
			nets := make([]hooks.KnownNetwork, 0, len(v)/networkRecord)
			for ; len(v) > 0; v = v[networkRecord:] {
				var n hooks.KnownNetwork
				copy(n.Network[:], v)
				n.Seen = time.Unix(int64(binary.BigEndian.Uint64(v[len(n.Network):])), 0)
				nets = append(nets, n)
			}
			visit(name, nets)
			return nil
		})
	})
}

// SaveNetworks implements hooks.NetworkStore. It commits at once (a login
// from a new network is rare; losing it to a crash would leave the name
// exposed again).
func (s *stateStore) SaveNetworks(name hooks.Digest, nets []hooks.KnownNetwork) error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(networksBucket)
		if len(nets) == 0 {
			return b.Delete(name[:])
		}
		return b.Put(name[:], encodeNetworks(nets))
	})
	if err != nil {
		return fmt.Errorf("known networks: %w", err)
	}
	return nil
}

// SaveNetworksBatch implements hooks.NetworkBatch: many names in one
// transaction.
func (s *stateStore) SaveNetworksBatch(names map[hooks.Digest][]hooks.KnownNetwork) error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(networksBucket)
		for name, nets := range names {
			if err := b.Put(name[:], encodeNetworks(nets)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("known networks: %w", err)
	}
	return nil
}

func encodeNetworks(nets []hooks.KnownNetwork) []byte {
	v := make([]byte, 0, len(nets)*networkRecord)
	for _, n := range nets {
		v = append(v, n.Network[:]...)
		v = binary.BigEndian.AppendUint64(v, uint64(n.Seen.Unix()))
	}
	return v
}
