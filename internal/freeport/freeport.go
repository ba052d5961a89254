// Package freeport picks loopback TCP ports for servers a test starts as
// separate processes (influxd, veil serve), which bind the port themselves.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// The kernel's ephemeral range when /proc does not say (Linux's default).
const (
	defaultEphemeralLow  = 32768
	defaultEphemeralHigh = 60999
	// lowest is the lowest port picked: clear of the well-known ports and
	// of the usual fixed ones below it.
	lowest = 10000
)

// Loopback returns a TCP port free on 127.0.0.1 now, outside the kernel's
// ephemeral range. A port the kernel hands out for a bind to port 0 (as
// net.Listen("tcp", "127.0.0.1:0") would pick it) is free again once the
// picker closes it, and the kernel may hand it to the next bind to port 0:
// influxd bound its RPC listener there and then failed to bind its HTTP
// listener on the port it was given ("address already in use"). A port
// below the ephemeral range is never handed out that way, so only a
// server binding it by number can take it — also while a test has stopped
// the server to restart it on the same port.
func Loopback() (int, error) {
	low, high := ephemeralRange()
	if low-1 >= lowest {
		return pick(lowest, low-1)
	}
	return pick(high+1, 65535) // the range starts low: above it, then
}

// LoopbackAddr is Loopback as "127.0.0.1:port".
func LoopbackAddr() (string, error) {
	p, err := Loopback()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

// pick tries random ports in [from, to] until one can be bound.
func pick(from, to int) (int, error) {
	if from > to {
		return 0, fmt.Errorf("freeport: no ports outside the ephemeral range (%d-%d)", from, to)
	}
	var err error
	for range 100 {
		p := from + rand.IntN(to-from+1)
		var l net.Listener
		if l, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			l.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("freeport: no free port in %d-%d after 100 tries: %w", from, to, err)
}

// ephemeralRange reads Linux's ip_local_port_range.
func ephemeralRange() (low, high int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeralLow, defaultEphemeralHigh
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return defaultEphemeralLow, defaultEphemeralHigh
	}
	low, err1 := strconv.Atoi(f[0])
	high, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || low > high {
		return defaultEphemeralLow, defaultEphemeralHigh
	}
	return low, high
}
