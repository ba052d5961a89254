package hooks_test

import (
	"context"
	"fmt"
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
