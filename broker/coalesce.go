package broker

import (
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

const (
	// maxCorked bounds what a connection holds back before writing anyway.
	maxCorked = 64 << 10
	// keptCorked is the largest buffer a connection keeps between bursts.
	keptCorked = 16 << 10
	// closeFlushTimeout bounds the last write of a closing connection.
	closeFlushTimeout = time.Second
)

// coalescing wraps a TCP listener so that every connection it accepts
// coalesces the writes made while its reader handles what it just read.
//
// mochi writes the acknowledgement of a QoS 1 publish with a system call of
// its own, from the publisher's reader goroutine, however many publishes
// arrived in one read: at QoS 1 that write was a fifth of the broker's CPU.
// Mosquitto answers all the packets of one read with one write; so does
// Veil now, for every client and with enforcement on or off alike.
type coalescing struct{ listeners.Listener }

// tcpListener is mochi's TCP listener (with TLS when cfg is set) whose
// connections coalesce their writes.
func tcpListener(id, addr string, cfg *tls.Config) listeners.Listener {
	return coalescing{listeners.NewTCP(listeners.Config{ID: id, Address: addr, TLSConfig: cfg})}
}

// Serve hands mochi each accepted connection wrapped.
func (l coalescing) Serve(establish listeners.EstablishFn) {
	l.Listener.Serve(func(id string, c net.Conn) error {
		return establish(id, &coalescingConn{Conn: c})
	})
}

// coalescingConn holds back the writes made between a Read that returned
// data and the next Read (or Close), and writes them at once, in order,
// before that Read waits for the client. Everything written while the
// reader waits goes out at once, so a subscriber's deliveries are held back
// only while its own reader handles a packet of it (an acknowledgement, a
// ping), never while it is idle. The reader of a connection is one
// goroutine (mochi's read loop); writers may be any.
type coalescingConn struct {
	net.Conn

	mu      sync.Mutex
	corked  bool   // the reader is handling what its last Read returned
	pending []byte // held-back writes, in order
	err     error  // a held-back write's failure, returned by the next call
}

// Read writes what was held back, then reads.
func (c *coalescingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	err := c.flushLocked()
	c.corked = false
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.corked = true
		c.mu.Unlock()
	}
	return n, err
}

// Write holds p back while the reader handles a read, else writes it.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.corked {
		return c.Conn.Write(p)
	}
	c.pending = append(c.pending, p...)
	if len(c.pending) >= maxCorked {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Close writes what was held back, then closes: a CONNACK or DISCONNECT
// with a reason code is written just before mochi closes the connection.
// Writing gets a second at most, set before taking the lock: a session
// taken over closes its old connection from the new one's goroutine, and a
// client that reads nothing must not hold that up, whether through the
// held-back bytes or through a write already stuck holding the lock.
func (c *coalescingConn) Close() error {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	c.mu.Lock()
	_ = c.flushLocked()
	c.corked = false
	c.mu.Unlock()
	return c.Conn.Close()
}

func (c *coalescingConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.pending) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.pending)
	c.pending = c.pending[:0]
	if cap(c.pending) > keptCorked {
		c.pending = nil // a burst does not stay allocated per client
	}
	c.err = err
	return err
}
