package hooks

import (
	"net"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// CloseSafely wraps l so that closing it disconnects its clients without
// mochi's Clients.GetByListener. That read-locks the client map twice, and a
// client connecting or disconnecting in between deadlocks every later use of
// the map, Server.Close included (mochi-mqtt/server#488; the fixes, #489
// and #507, are not in v2.7.9). Server.Close closes the listeners one after
// another, so with two of them the first one's clients disconnecting while
// the second looks its clients up is an ordinary shutdown; with one, a
// client leaving on its own as the broker stops is enough.
func CloseSafely(l listeners.Listener, srv *mqtt.Server) listeners.Listener {
	return safeClosing{Listener: l, srv: srv, gate: new(acceptGate)}
}

type safeClosing struct {
	listeners.Listener
	srv  *mqtt.Server
	gate *acceptGate
}

// acceptGate orders each connection the listener accepted against its
// closing. mochi's TCP listener starts a goroutine per accepted connection,
// which counts itself in Listeners.ClientsWg only once it runs: one accepted
// as the listener closes could count itself while Server.Close already
// waits on the group (a data race the race detector reported in make test).
// The gate counts the connection first, in order with Close, or refuses it.
type acceptGate struct {
	mu     sync.RWMutex
	closed bool
}

// Serve hands the listener's connections to establish, each counted in
// mochi's ClientsWg before the listener's Close returns, or closed if it
// came after.
func (l safeClosing) Serve(establish listeners.EstablishFn) {
	wg := &l.srv.Listeners.ClientsWg
	l.Listener.Serve(func(id string, c net.Conn) error {
		l.gate.mu.RLock()
		if l.gate.closed {
			l.gate.mu.RUnlock()
			return c.Close()
		}
		wg.Add(1)
		l.gate.mu.RUnlock()
		defer wg.Done()
		return establish(id, c)
	})
}

// Close stops accepting, then disconnects the listener's clients as mochi
// would, finding them under a single read lock. mochi disconnects them before
// it closes the socket, so a connection accepted meanwhile started its
// goroutine (ClientsWg.Add) while Server.Close waited for them (Wait): a data
// race the race detector reported in a clean-clone CI run.
func (l safeClosing) Close(listeners.CloseFn) {
	l.gate.mu.Lock()
	l.gate.closed = true
	l.gate.mu.Unlock()
	l.Listener.Close(func(string) {})
	id := l.Listener.ID()
	for _, cl := range l.srv.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			_ = l.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}
