package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestLoopbackOutsideTheEphemeralRange: every port picked is outside the
// range the kernel hands out for port 0, and free to bind.
func TestLoopbackOutsideTheEphemeralRange(t *testing.T) {
	low, high := ephemeralRange()
	for range 50 {
		p, err := Loopback()
		if err != nil {
			t.Fatal(err)
		}
		if p >= low && p <= high || p < lowest || p > 65535 {
			t.Fatalf("port %d: inside the ephemeral range %d-%d or out of bounds", p, low, high)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d picked, not free: %v", p, err)
		}
		l.Close()
	}
}

// TestPickSkipsPortsInUse: a port in use is not picked; with none free
// the error names the range.
func TestPickSkipsPortsInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	if p, err := pick(busy, busy); err == nil {
		t.Fatalf("picked port %d, which is in use", p)
	}
	if _, err := pick(2, 1); err == nil {
		t.Fatal("picked a port from an empty range")
	}
}
