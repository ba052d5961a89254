package loadgen

import (
	"bufio"
	"net"
	"sync"
)

// bufConn makes paho cheap enough that the load generator is not the
// bottleneck: paho reads each packet header byte by byte (a system call
// each) and writes a packet as several buffers (a system call each).
// bufConn reads through a bufio.Reader and, while paho holds it as a
// sync.Locker (it does around every packet it writes), gathers the writes
// of the packet and sends them in one system call on Unlock.
type bufConn struct {
	net.Conn
	r    *bufio.Reader
	mu   sync.Mutex
	wbuf []byte
	werr error
}

func newBufConn(c net.Conn, size int) *bufConn {
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, size)}
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write is only called by paho with the lock held (see Lock).
func (c *bufConn) Write(p []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	c.wbuf = append(c.wbuf, p...)
	return len(p), nil
}

// Lock starts a packet.
func (c *bufConn) Lock() { c.mu.Lock() }

// Unlock sends the packet.
func (c *bufConn) Unlock() {
	if len(c.wbuf) > 0 && c.werr == nil {
		_, c.werr = c.Conn.Write(c.wbuf)
	}
	c.wbuf = c.wbuf[:0]
	c.mu.Unlock()
}
