package hooks

// EventSet is the set of mochi hook events a hook provides. mochi asks
// every hook's Provides for every event of every packet, so the answer is
// one bit test rather than a search.
type EventSet uint64

// Events returns the set of the given events (mochi's On… constants, all
// below 64).
func Events(events ...byte) EventSet {
	var s EventSet
	for _, e := range events {
		s |= 1 << e
	}
	return s
}

// Has reports whether e is in the set.
func (s EventSet) Has(e byte) bool { return e < 64 && s&(1<<e) != 0 }
