package hooks

import (
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
	return safeClosing{Listener: l, srv: srv}
}

type safeClosing struct {
	listeners.Listener
	srv *mqtt.Server
}

// Close stops accepting, then disconnects the listener's clients as mochi
// would, finding them under a single read lock. mochi disconnects them before
// it closes the socket, so a connection accepted meanwhile started its
// goroutine (ClientsWg.Add) while Server.Close waited for them (Wait): a data
// race the race detector reported in a clean-clone CI run.
func (l safeClosing) Close(listeners.CloseFn) {
	l.Listener.Close(func(string) {})
	id := l.Listener.ID()
	for _, cl := range l.srv.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			_ = l.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}
