package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection, the server's
// wrapped as the broker wraps it.
func pair(t *testing.T) (server *coalescingConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = &coalescingConn{Conn: <-accepted}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// arrives reads exactly want from c within a second.
func arrives(t *testing.T, c net.Conn, want string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("client read %q, %v; want %q", got, err, want)
	}
}

// nothingArrives checks that c receives nothing for a while.
func nothingArrives(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var b [64]byte
	if n, err := c.Read(b[:]); n > 0 || !errors.Is(err, timeoutErr(err)) {
		t.Fatalf("client read %q, %v; want nothing yet", b[:n], err)
	}
}

func timeoutErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

func TestCoalescingHoldsBackWritesWhileTheReaderHandlesARead(t *testing.T) {
	server, client := pair(t)

	// Nothing read yet (a subscriber waiting for deliveries): out at once.
	if _, err := server.Write([]byte("connack;")); err != nil {
		t.Fatal(err)
	}
	arrives(t, client, "connack;")

	// The client sends three publishes in one segment; the server reads them.
	if _, err := client.Write([]byte("p1p2p3")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := server.Read(buf); err != nil || string(buf[:n]) != "p1p2p3" {
		t.Fatalf("server read %q, %v", buf[:n], err)
	}
	// Handling them, the server acknowledges each: held back.
	for _, ack := range []string{"a1;", "a2;", "a3;"} {
		if n, err := server.Write([]byte(ack)); err != nil || n != len(ack) {
			t.Fatalf("write %q: %d, %v", ack, n, err)
		}
	}
	nothingArrives(t, client)

	// The server's next read writes them first, in order, in one go.
	read := make(chan string)
	go func() {
		n, _ := server.Read(buf)
		read <- string(buf[:n])
	}()
	arrives(t, client, "a1;a2;a3;")
	// While that read waits, writes go out at once again.
	if _, err := server.Write([]byte("delivery;")); err != nil {
		t.Fatal(err)
	}
	arrives(t, client, "delivery;")
	if _, err := client.Write([]byte("p4")); err != nil {
		t.Fatal(err)
	}
	if got := <-read; got != "p4" {
		t.Fatalf("server read %q", got)
	}
}

func TestCoalescingCloseWritesWhatWasHeldBack(t *testing.T) {
	server, client := pair(t)
	if _, err := client.Write([]byte("connect")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := server.Read(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("connack: not authorized")); err != nil {
		t.Fatal(err)
	}
	server.Close()
	_ = client.SetReadDeadline(time.Now().Add(time.Second))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "connack: not authorized" {
		t.Fatalf("client read %q, %v before the close", got, err)
	}
}

func TestCoalescingWritesABurstBeyondTheBound(t *testing.T) {
	server, client := pair(t)
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Read(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("d"), 1024)
	var want bytes.Buffer
	for want.Len() < maxCorked {
		if _, err := server.Write(chunk); err != nil {
			t.Fatal(err)
		}
		want.Write(chunk)
	}
	// No read since, yet the bound was reached: all of it is on its way.
	arrives(t, client, want.String())
}

// Concurrent writers (mochi's write loop and the reader) keep each write
// whole and lose nothing, held back or not.
func TestCoalescingConcurrentWritesStayWhole(t *testing.T) {
	server, client := pair(t)
	const writers, each = 4, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := server.Write(fmt.Appendf(nil, "<%d:%03d>", w, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Meanwhile the reader reads, which corks and flushes in turn.
	go func() {
		buf := make([]byte, 1)
		for {
			if _, err := server.Read(buf); err != nil {
				return
			}
		}
	}()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				_, _ = client.Write([]byte("."))
			}
		}
	}()
	wg.Wait()
	close(stop)
	total := writers * each * len("<0:000>")
	// What is still held back goes out with the reader's next read.
	_, _ = client.Write([]byte("."))
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, total)
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatalf("after %d bytes: %v", len(got), err)
	}
	next := make([]int, writers)
	for _, m := range strings.SplitAfter(string(got), ">") {
		if m == "" {
			continue
		}
		var w, i int
		if _, err := fmt.Sscanf(m, "<%d:%03d>", &w, &i); err != nil || w >= writers || i != next[w] {
			t.Fatalf("message %q out of place (writer %d expects %d)", m, w, next[min(w, writers-1)])
		}
		next[w]++
	}
}

// failingConn fails every write.
type failingConn struct{ net.Conn }

func (failingConn) Write([]byte) (int, error)  { return 0, errors.New("connection reset by peer") }
func (failingConn) Read(p []byte) (int, error) { return copy(p, "p"), nil }
func (failingConn) Close() error               { return nil }

func TestCoalescingReportsAHeldBackWriteThatFailed(t *testing.T) {
	c := &coalescingConn{Conn: failingConn{}}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ack")); err != nil {
		t.Fatalf("held back, the write cannot fail yet: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("the next read returned %v, want the write's failure", err)
	}
	if _, err := c.Write([]byte("more")); err == nil {
		t.Fatal("a write after the failure succeeded")
	}
}

// stuckConn is a client that reads nothing: a write waits for its
// deadline, which may be set while it waits (as on a real socket).
type stuckConn struct {
	net.Conn
	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed when the deadline changes
}

func newStuckConn() *stuckConn { return &stuckConn{changed: make(chan struct{})} }

func (c *stuckConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

func (c *stuckConn) Write([]byte) (int, error) {
	for {
		c.mu.Lock()
		d, changed := c.deadline, c.changed
		c.mu.Unlock()
		var expired <-chan time.Time
		if !d.IsZero() {
			expired = time.After(time.Until(d))
		}
		select {
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		case <-changed:
		}
	}
}

func (c *stuckConn) Read(p []byte) (int, error) { return copy(p, "p"), nil }
func (c *stuckConn) Close() error               { return nil }

// A session taken over closes its old connection from the new one's
// goroutine: a client that reads nothing must not hold that up, neither
// with bytes held back nor with a write already stuck.
func TestCoalescingCloseDoesNotWaitForADeadClient(t *testing.T) {
	closes := func(t *testing.T, c *coalescingConn) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			c.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(closeFlushTimeout + 3*time.Second):
			t.Fatal("Close waits for a client that reads nothing")
		}
	}
	t.Run("held back", func(t *testing.T) {
		c := &coalescingConn{Conn: newStuckConn()}
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("ack")); err != nil {
			t.Fatal(err)
		}
		closes(t, c)
	})
	t.Run("stuck write", func(t *testing.T) {
		c := &coalescingConn{Conn: newStuckConn()}
		go c.Write([]byte("delivery")) // nothing read: written at once, and stuck
		time.Sleep(50 * time.Millisecond)
		closes(t, c)
	})
}

// The broker's TCP listeners hand mochi coalescing connections.
func TestTCPListenerCoalesces(t *testing.T) {
	l := tcpListener("mqtt", "127.0.0.1:0", nil)
	if err := l.Init(nil); err != nil {
		t.Fatal(err)
	}
	defer l.Close(func(string) {})
	got := make(chan net.Conn, 1)
	go l.Serve(func(_ string, c net.Conn) error {
		got <- c
		return nil
	})
	c, err := net.Dial("tcp", l.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case sc := <-got:
		if _, ok := sc.(*coalescingConn); !ok {
			t.Fatalf("mochi got a %T", sc)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
}
