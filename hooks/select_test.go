package hooks_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestSharedGroupGetsPermittedMember: in a $share group of three strangers
// and a doctor, every message goes to the doctor, rounded. mochi alone picks
// any member, and a message given to a denied stranger is lost to the group.
func TestSharedGroupGetsPermittedMember(t *testing.T) {
	_, addr, _ := startServer(t, true)
	const filter = "$share/g/things/+/data/temperature"
	doctor := &counter{}
	subscribe(t, dialCounting(t, addr, "doctor-1", "doctor", "doctor", doctor), filter)
	var strangers []*counter
	for i := range 3 {
		c := &counter{}
		subscribe(t, dialCounting(t, addr, fmt.Sprintf("stranger-%d", i), "stranger", "stranger", c), filter)
		strangers = append(strangers, c)
	}
	pub := dialCounting(t, addr, "thermo-1", "thermo-1", "thermo-1", nil)
	for i := range 20 {
		payload := fmt.Sprintf(`{"temperature":21.%02d,"seq":%d}`, 30+i, i)
		if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "things/thermo-1/data/temperature", Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	waitAll(t, 20, []*counter{doctor})
	time.Sleep(100 * time.Millisecond)
	if got := doctor.last.Load(); got != `{"temperature":21.5,"seq":19}` {
		t.Fatalf("doctor's last payload %v", got)
	}
	for i, c := range strangers {
		if n := c.n.Load(); n != 0 {
			t.Fatalf("stranger %d received %d messages", i, n)
		}
	}
}

// TestReservedClientID: client ids starting with "$" are the broker's own.
func TestReservedClientID(t *testing.T) {
	_, addr, _ := startServer(t, true)
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	pc := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := pc.Connect(ctx, &paho.Connect{ClientID: "$veil-selector", Username: "an", UsernameFlag: true,
		Password: []byte("an"), PasswordFlag: true, CleanStart: true, KeepAlive: 60})
	if err == nil && ca.ReasonCode == 0 {
		_ = pc.Disconnect(&paho.Disconnect{})
		t.Fatal("a client took the id $veil-selector")
	}
}

// TestSelectorFollowsSharedWildcards: the selector's shared subscription
// exists for a wildcard filter exactly while two or more clients hold it.
func TestSelectorFollowsSharedWildcards(t *testing.T) {
	srv, addr, _ := startServer(t, true)
	const filter, topic = "things/+/data/#", "things/thermo-1/data/temperature"
	selected := func() bool {
		for f := range srv.Topics.Subscribers(topic).Shared {
			if strings.HasPrefix(f, "$share/veil-selector/") {
				return true
			}
		}
		return false
	}
	waitFor := func(want bool, what string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); selected() != want; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: selector present = %v, want %v", what, !want, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Doctors: a stranger's wildcard subscriptions would be parked (park.go).
	s1 := dialCounting(t, addr, "doctor-1", "doctor", "doctor", nil)
	subscribe(t, s1, filter)
	waitFor(false, "one wildcard subscriber")
	s2 := dialCounting(t, addr, "doctor-2", "doctor", "doctor", nil)
	subscribe(t, s2, filter)
	subscribe(t, s2, filter) // a second SUBSCRIBE of the same filter is still one client
	waitFor(true, "two wildcard subscribers")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s2.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}}); err != nil {
		t.Fatal(err)
	}
	waitFor(false, "one left after an unsubscribe")
	subscribe(t, s2, filter)
	waitFor(true, "two again")
	_ = s2.Disconnect(&paho.Disconnect{})
	waitFor(false, "one left after a disconnect")
}
